"""Exception handlers: client mistakes become 4xx with the field and the fix, never a 500.

Error bodies: `{"detail": "text"}`, or for 422 `{"detail": [{"field": ..., "message": ..., "index": ...}]}`
where each entry also carries FastAPI's own `loc` / `msg` / `type`, so generic FastAPI clients read it too.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError

from alphasearch.errors import ConfigError, NotFoundError, StateError, StorageError

log = logging.getLogger(__name__)


def field_error(field: str, message: str, *, index: int | None = None, kind: str = "value_error") -> dict:
    loc: list[str | int] = ["body"] + ([index] if index is not None else []) + field.split(".")
    out = {"field": field, "message": message, "loc": loc, "msg": message, "type": kind}
    if index is not None:
        out["index"] = index
    return out


def field_errors(errors: list[dict]) -> list[dict]:
    out = []
    for err in errors:
        loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
        names = loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc
        message = err.get("msg", "invalid")
        out.append({"field": ".".join(map(str, names)) or "body", "message": message, "loc": loc or ["body"],
                    "msg": message, "type": err.get("type", "value_error")})  # fmt: skip
    return out


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": field_errors(list(exc.errors()))}, status_code=422)


async def _config(request: Request, exc: ConfigError) -> JSONResponse:
    return JSONResponse({"detail": [field_error(exc.field, exc.message, kind="config_error")]}, status_code=422)


async def _state(request: Request, exc: StateError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _data(request: Request, exc: DataError) -> JSONResponse:
    # A value the database refuses (e.g. a NUL byte for PostgreSQL): the client's input, not our fault.
    return JSONResponse({"detail": [field_error("body", "a value the database cannot store")]}, status_code=422)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse({"detail": "the database is unavailable; try again shortly"}, status_code=503,
                        headers={"Retry-After": "5"})  # fmt: skip


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(ConfigError, _config)  # type: ignore[arg-type]
    app.add_exception_handler(StateError, _state)  # type: ignore[arg-type]
    app.add_exception_handler(NotFoundError, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(DataError, _data)  # type: ignore[arg-type]
    app.add_exception_handler(OperationalError, _unavailable)
    app.add_exception_handler(StorageError, _unavailable)
