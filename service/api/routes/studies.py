"""/api/v1/studies: submit, list, inspect and cancel studies; their trials, recommendation and heatmaps."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from alphasearch.spec import StudySpec
from service import crud, trials
from service.api.deps import CorporaDep, SessionDep, SettingsDep, WriterDep
from service.api.errors import field_error
from service.api.schemas import (
    ErrorPublic,
    HeatmapPublic,
    HeatmapsPublic,
    LaneProgress,
    Progress,
    RecommendationPublic,
    StudiesPublic,
    StudyCreate,
    StudyPublic,
    TrialPublic,
    TrialsPublic,
)
from service.models import Study
from service.validation import request_hash, spec_from_fields

router = APIRouter(prefix="/studies", tags=["studies"])

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
PNG_CACHE = "public, max-age=86400, immutable"  # a finished study's figures never change
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
           description="A retried request with the same key returns the first answer instead of a twin."),
]  # fmt: skip
NOT_FOUND = {404: {"model": ErrorPublic, "description": "unknown id"}}
NOT_READY = {409: {"model": ErrorPublic, "description": "the study has not completed"}}


def study_public(study: Study, base: str = "/api/v1") -> StudyPublic:
    total = max(study.trials_total, 0)
    lanes = [LaneProgress(**lane) for lane in (study.lanes or [])]
    link = f"{base}/studies/{study.id}"
    return StudyPublic(
        id=study.id, name=study.name, status=study.status,  # type: ignore[arg-type]
        target_width=study.target_width, target_depth=study.target_depth, norm=study.norm, spec=study.spec,
        progress=Progress(trials_done=study.trials_done, trials_total=total,
                          fraction=min(1.0, study.trials_done / total) if total else 0.0,
                          eta_s=study.eta_s if study.status == "running" else None, lanes=lanes),
        error=study.error, cancel_requested=study.cancel_requested, batch_id=study.batch_id,
        created_at=study.created_at, updated_at=study.updated_at, started_at=study.started_at,
        finished_at=study.finished_at,
        links={"self": link, "trials": f"{link}/trials", "recommendation": f"{link}/recommendation",
               "heatmaps": f"{link}/heatmaps", "cancel": f"{link}/cancel"},
    )  # fmt: skip


def load_study(session: Any, study_id: str) -> Study:
    study = crud.get_study(session, study_id=study_id) if ID_PATTERN.fullmatch(study_id) else None
    if study is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study with id {study_id!r}")
    return study


def _require_completed(study: Study, what: str) -> None:
    if study.status != "completed":
        hint = {"queued": "it has not started", "running": f"it is running ({study.trials_done}/{study.trials_total} trials)",
                "failed": f"it failed: {study.error}", "cancelled": "it was cancelled"}[study.status]  # fmt: skip
        raise HTTPException(status.HTTP_409_CONFLICT, f"study {study.id} has no {what}: {hint}")


def _replay(existing: Any, digest: str, public: Any) -> JSONResponse:
    if existing.request_hash != digest:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [field_error("Idempotency-Key", "this key was used for a different request; use a new key")],
        )
    return JSONResponse(public.model_dump(mode="json"), status_code=202, headers={"Idempotent-Replayed": "true"})


@router.post("", status_code=202, response_model=StudyPublic, dependencies=[WriterDep],
             responses={422: {"model": ErrorPublic, "description": "invalid spec: the field and the fix"}})  # fmt: skip
def create_study(
    body: StudyCreate, session: SessionDep, corpora: CorporaDep, idempotency_key: IdempotencyKey = None
) -> Any:  # type: ignore[valid-type]
    """Queue a study. `{"preset": "quick", "target_width": 4096, "target_depth": 32}` is enough."""
    fields = body.model_dump(exclude_unset=True)
    digest = request_hash(fields)
    if idempotency_key is not None:
        existing = crud.get_study_by_idempotency_key(session, key=idempotency_key)
        if existing is not None:
            return _replay(existing, digest, study_public(existing))
    spec: StudySpec = spec_from_fields(fields, session, corpora)  # use_calibration: regimes from stored calibrations
    try:
        study = crud.create_study(session, spec=spec, idempotency_key=idempotency_key, request_hash=digest)
        session.commit()
    except IntegrityError:  # the same key raced in from a concurrent retry
        session.rollback()
        existing = crud.get_study_by_idempotency_key(session, key=idempotency_key or "")
        if existing is None:
            raise
        return _replay(existing, digest, study_public(existing))
    return study_public(study)


@router.get("", response_model=StudiesPublic)
def list_studies(
    session: SessionDep,
    status_: Annotated[Literal["queued", "running", "completed", "failed", "cancelled"] | None,
                       Query(alias="status")] = None,
    batch_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Any:  # fmt: skip
    """Newest first."""
    rows, count = crud.list_studies(session, status=status_, batch_id=batch_id, limit=limit, offset=offset)
    return StudiesPublic(data=[study_public(s) for s in rows], count=count)


@router.get("/{study_id}", response_model=StudyPublic, responses=NOT_FOUND)
async def get_study(study_id: str, request: Request) -> Any:
    """Status, progress (trials done / total per proxy width, ETA) and the spec with presets resolved."""
    snapshots = request.app.state.snapshots  # polled a lot: served from memory (service/snapshots.py)
    body = snapshots.cached(study_id) if ID_PATTERN.fullmatch(study_id) else None
    if body is None and ID_PATTERN.fullmatch(study_id):
        body = await run_in_threadpool(snapshots.load, study_id)
    if body is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study with id {study_id!r}")
    return Response(body, media_type="application/json")


@router.post("/{study_id}/cancel", response_model=StudyPublic, dependencies=[WriterDep],
             responses={**NOT_FOUND, 409: {"model": ErrorPublic, "description": "the study already finished"}})  # fmt: skip
def cancel_study(study_id: str, request: Request, session: SessionDep) -> Any:
    """Queued: cancelled at once. Running: stopped by its scheduler within seconds (status follows)."""
    load_study(session, study_id)
    study = crud.request_cancel(session, study_id=study_id)  # StateError -> 409
    session.commit()
    request.app.state.snapshots.invalidate(study_id)
    if study is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study with id {study_id!r}")
    return study_public(study)


@router.get("/{study_id}/trials", response_model=TrialsPublic, responses={**NOT_FOUND, 200: {
    "content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON, or CSV with ?format=csv"}})  # fmt: skip
def list_trials(
    study_id: str,
    session: SessionDep,
    settings: SettingsDep,
    format: Annotated[Literal["json", "csv"], Query(description="csv: every trial, one row each")] = "json",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Any:
    """The study's Optuna trials across every proxy lane. JSON is paginated; CSV holds them all."""
    study = load_study(session, study_id)
    session.close()  # reading Optuna can take a while; give the connection back first
    rows = trials.study_trials(StudySpec.from_dict(study.spec), study.id, settings.resolved_database_url)
    if format == "csv":
        return Response(trials.to_csv(rows), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{study.id}-trials.csv"'})  # fmt: skip
    page = rows[offset : offset + limit]
    return TrialsPublic(data=[TrialPublic(**row) for row in page], count=len(rows))


@router.get("/{study_id}/recommendation", response_model=RecommendationPublic, responses={**NOT_FOUND, **NOT_READY})
def get_recommendation(study_id: str, session: SessionDep) -> Any:
    """This study's recommendation at its own target (DESIGN §7 JSON)."""
    study = load_study(session, study_id)
    _require_completed(study, "recommendation")
    result = crud.get_result(session, study_id=study.id)
    if result is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"study {study.id} has no stored result")
    return JSONResponse(result.recommendation)


@router.get("/{study_id}/heatmaps", response_model=HeatmapsPublic, responses={**NOT_FOUND, **NOT_READY})
def get_heatmaps(study_id: str, request: Request, session: SessionDep) -> Any:
    """Loss surfaces per proxy (width, depth) plus the extrapolated one at the target width, as grids."""
    study = load_study(session, study_id)
    _require_completed(study, "heatmaps")
    result = crud.get_result(session, study_id=study.id)
    grids: dict[str, Any] = (result.report.get("heatmaps") if result else None) or {}
    data = []
    for key, grid in grids.items():
        extrapolated = key == "extrapolated"
        name = "extrapolated" if extrapolated else str(grid.get("width"))
        data.append(HeatmapPublic(
            key=key, width=int(grid.get("width") or study.target_width), depth=int(grid.get("depth") or study.target_depth),
            extrapolated=extrapolated, png_url=f"/api/v1/studies/{study.id}/heatmaps/{name}.png"
            + ("" if extrapolated else f"?depth={grid.get('depth')}"), grid=grid,
        ))  # fmt: skip
    return HeatmapsPublic(data=data, count=len(data))


def _png(body: bytes) -> Response:
    return Response(body, media_type="image/png", headers={"Cache-Control": PNG_CACHE})


@router.get("/{study_id}/heatmaps/{width}.png", response_class=Response, responses={
    **NOT_FOUND, **NOT_READY, 200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}})  # fmt: skip
def get_heatmap_png(
    study_id: str,
    width: str,
    session: SessionDep,
    depth: Annotated[int | None, Query(ge=1, le=10_000, description="proxy depth, when several ran")] = None,
) -> Response:
    """A heatmap as PNG: `{width}` is a proxy width (e.g. `64`) or `extrapolated` (the target width)."""
    study = load_study(session, study_id)
    _require_completed(study, "heatmaps")
    keys = crud.figure_keys(session, study_id=study.id)
    if width == "extrapolated":
        wanted = [k for k in keys if k == "extrapolated"]
    elif width.isdigit():
        wanted = [k for k in keys if k.startswith(f"w{int(width)}-d") and (depth is None or k == f"w{int(width)}-d{depth}")]
    else:
        wanted = [k for k in keys if k == width and k.startswith("w")]
    if not wanted:
        options = ", ".join(k.split("-")[0][1:] if k.startswith("w") else k for k in keys if k != "width-fit")
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no heatmap {width!r} for study {study.id}; it has: {options}")
    return _png(crud.get_figure(session, study_id=study.id, key=wanted[0]) or b"")


@router.get("/{study_id}/width-fit.png", response_class=Response, responses={
    **NOT_FOUND, **NOT_READY, 200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}})  # fmt: skip
def get_width_fit_png(study_id: str, session: SessionDep) -> Response:
    """Best alpha0 against proxy width (log-log) with the fitted trend and the target."""
    study = load_study(session, study_id)
    _require_completed(study, "width fit")
    png = crud.get_figure(session, study_id=study.id, key="width-fit")
    if png is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"study {study.id} has no width-fit figure")
    return _png(png)
