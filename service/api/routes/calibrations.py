"""/api/v1/calibrations: calibrate the proxy training regime per width (alphasearch/calibrate.py).

POST queues one calibration per width (202); the scheduler runs them like studies (claim + lease, on the
configured executor). GET lists them or returns one, with its progress and, once it ran, the result:
the chosen lr/warmup, seed noise, alpha effect, SNR, gap to RMSNorm, stall rate and warnings. Studies
submitted with `use_calibration: true` take their per-width lr from the newest matching completed one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status

from alphasearch.executor import code_version
from service import crud
from service.api.deps import CorporaDep, SessionDep, WriterDep
from service.api.routes.studies import ID_PATTERN
from service.api.schemas import (
    CalibrationCreate,
    CalibrationProgress,
    CalibrationPublic,
    CalibrationsPublic,
    ErrorPublic,
)
from service.calibrations import progress_of, settings_from_fields
from service.models import Calibration

router = APIRouter(prefix="/calibrations", tags=["calibrations"])


def calibration_public(row: Calibration, base: str = "/api/v1") -> CalibrationPublic:
    result = row.result or {}
    return CalibrationPublic(
        id=row.id, status=row.status, width=row.width, depth=row.depth, norm=row.norm,  # type: ignore[arg-type]
        attention=row.attention, embed_scale=row.embed_scale, corpus=row.corpus,
        corpus_fingerprint=row.corpus_fingerprint, code_version=row.code_version, steps=row.steps,
        batch_size=row.batch_size, seq_len=row.seq_len, settings=row.settings,
        progress=CalibrationProgress(**progress_of(row)), regime=result.get("regime"), snr=result.get("snr"),
        gap=result.get("gap"), stall_rate=result.get("stall_rate"), warnings=result.get("warnings") or [],
        result=row.result, error=row.error, created_at=row.created_at, updated_at=row.updated_at,
        started_at=row.started_at, finished_at=row.finished_at, links={"self": f"{base}/calibrations/{row.id}"},
    )  # fmt: skip


@router.post("", status_code=202, response_model=CalibrationsPublic, dependencies=[WriterDep],
             responses={422: {"model": ErrorPublic, "description": "invalid settings: the field and the fix"}})  # fmt: skip
def create_calibrations(body: CalibrationCreate, session: SessionDep, corpora: CorporaDep) -> Any:  # type: ignore[valid-type]
    """Queue a calibration per width: `{"widths": [64, 128, 256]}` is enough (preset `quick`'s regime).

    Any calibration setting may be given by name: `lrs`, `steps`, `batch_size`, `seq_len`, `warmup_steps`,
    `seeds`, `alpha`, `grid`, `depth`, `norm`, `attention`, `embed_scale`, `corpus`, ...
    """
    widths, settings, fingerprint = settings_from_fields(body.model_dump(exclude_unset=True), corpora)  # type: ignore[attr-defined]
    rows = crud.create_calibrations(session, widths=widths, settings=settings.to_dict(),
                                    corpus_fingerprint=fingerprint, code_version=code_version())  # fmt: skip
    session.commit()
    return CalibrationsPublic(data=[calibration_public(r) for r in rows], count=len(rows))


@router.get("", response_model=CalibrationsPublic)
def list_calibrations(
    session: SessionDep,
    width: Annotated[int | None, Query(ge=8, le=65_536)] = None,
    depth: Annotated[int | None, Query(ge=1, le=256)] = None,
    norm: Annotated[Literal["dyt", "derf"] | None, Query()] = None,
    status_: Annotated[
        Literal["queued", "running", "completed", "failed"] | None, Query(alias="status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Any:
    """Newest first."""
    rows, count = crud.list_calibrations(session, width=width, depth=depth, norm=norm, status=status_,
                                         limit=limit, offset=offset)  # fmt: skip
    return CalibrationsPublic(data=[calibration_public(r) for r in rows], count=count)


@router.get("/{calibration_id}", response_model=CalibrationPublic,
            responses={404: {"model": ErrorPublic, "description": "unknown id"}})  # fmt: skip
def get_calibration(calibration_id: str, session: SessionDep) -> Any:
    """Status, progress and (once it ran) the result of one width's calibration."""
    row = (
        crud.get_calibration(session, calibration_id=calibration_id)
        if ID_PATTERN.fullmatch(calibration_id)
        else None
    )
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no calibration with id {calibration_id!r}")
    return calibration_public(row)
