"""/healthz and /metrics (outside /api/v1: infrastructure, not product API)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.api.schemas import Health

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=Health, responses={503: {"description": "the database is unreachable"}})
def healthz(request: Request) -> Any:
    """Liveness and readiness: the database answers, and whether this process runs a scheduler."""
    scheduler = request.app.state.scheduler
    state = "off" if scheduler is None else ("stopping" if scheduler.stopping.is_set() else "running")
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return JSONResponse({"status": "unavailable", "database": "unreachable", "scheduler": state}, status_code=503)
    return Health(status="ok", database="ok", scheduler=state)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})  # fmt: skip
def metrics(request: Request) -> Response:
    """Prometheus text: studies by status, queue depth, trials by state, trial durations."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
