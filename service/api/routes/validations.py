"""/api/v1/studies/{id}/validations: train a finished study's recommendation wider than its proxies.

POST queues one (202; the scheduler runs it like studies: claim + lease, on the configured executor).
The same body for the same study returns the same validation (a failed one is queued again). GET lists a
study's validations with their progress, per-point runs and the regret with its noise.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy.exc import IntegrityError

from alphasearch.errors import NotFoundError, StateError
from alphasearch.validation import check_seeds, check_width
from service import crud
from service.api.deps import SessionDep, SettingsDep, WriterDep
from service.api.routes.studies import ID_PATTERN
from service.api.schemas import (
    ErrorPublic,
    ValidationCreate,
    ValidationProgress,
    ValidationPublic,
    ValidationsPublic,
)
from service.models import Validation
from service.validations import progress_of, study_spec

router = APIRouter(prefix="/studies", tags=["validations"])


def validation_public(row: Validation, base: str = "/api/v1") -> ValidationPublic:
    progress = progress_of(row)
    total = int(progress.get("total") or 0)
    done = int(progress.get("done") or 0)
    return ValidationPublic(
        id=row.id, study_id=row.study_id, status=row.status, width=row.width, seeds=row.seeds,  # type: ignore[arg-type]
        progress=ValidationProgress(done=done, total=total, fraction=min(1.0, done / total) if total else 0.0,
                                    message=str(progress.get("message") or "")),
        plan=row.plan, result=row.result, regret=(row.result or {}).get("regret"), runs=row.runs or [],
        error=row.error, created_at=row.created_at, updated_at=row.updated_at, started_at=row.started_at,
        finished_at=row.finished_at,
        links={"self": f"{base}/studies/{row.study_id}/validations/{row.id}", "study": f"{base}/studies/{row.study_id}"},
    )  # fmt: skip


def _study_id(study_id: str) -> str:
    if not ID_PATTERN.fullmatch(study_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study with id {study_id!r}")
    return study_id


@router.post("/{study_id}/validations", status_code=202, response_model=ValidationPublic, dependencies=[WriterDep],
             responses={404: {"model": ErrorPublic, "description": "unknown study"},
                        409: {"model": ErrorPublic, "description": "the study has not completed"},
                        422: {"model": ErrorPublic, "description": "bad width or seeds: the field and the fix"}})  # fmt: skip
def create_validation(study_id: str, body: ValidationCreate, request: Request, session: SessionDep,
                      settings: SettingsDep) -> Any:  # fmt: skip
    """Queue a validation: `{}` trains at twice the widest proxy (or the target) with 2 seeds per point."""
    spec = study_spec(session, settings.resolved_database_url, _study_id(study_id))  # 404 / 409
    width, seeds = check_width(spec, body.width), check_seeds(body.seeds)  # ConfigError -> 422 naming the field
    try:
        row, _ = crud.request_validation(session, study_id=study_id, width=width, seeds=seeds)
        session.commit()
    except IntegrityError:  # the same request raced in from a concurrent retry
        session.rollback()
        row = crud.find_validation(session, study_id=study_id, width=width, seeds=seeds)  # type: ignore[assignment]
        if row is None:
            raise
    session.refresh(row)
    return validation_public(row)


@router.get("/{study_id}/validations", response_model=ValidationsPublic,
            responses={404: {"model": ErrorPublic, "description": "unknown study"}})  # fmt: skip
def list_validations(study_id: str, session: SessionDep, settings: SettingsDep) -> Any:
    """Newest first: status, progress, per-point runs, and the regret with its noise once runs finished."""
    rows = crud.list_validations(session, study_id=_study_id(study_id))
    if not rows and crud.get_study(session, study_id=study_id) is None:
        try:
            study_spec(session, settings.resolved_database_url, study_id)
        except StateError:
            pass  # a CLI study still running: it exists, it has no validations
        except NotFoundError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study with id {study_id!r}") from None
    return ValidationsPublic(data=[validation_public(r) for r in rows], count=len(rows))


@router.get("/{study_id}/validations/{validation_id}", response_model=ValidationPublic,
            responses={404: {"model": ErrorPublic, "description": "unknown id"}})  # fmt: skip
def get_validation(study_id: str, validation_id: str, session: SessionDep) -> Any:
    row = crud.get_validation(session, validation_id=validation_id) if ID_PATTERN.fullmatch(validation_id) else None
    if row is None or row.study_id != study_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no validation {validation_id!r} of study {study_id!r}")
    return validation_public(row)
