"""/api/v1/batches: many studies at once, validated all-or-nothing (one error per bad entry)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.datastructures import UploadFile

from alphasearch.errors import ConfigError
from service import crud
from service.api.deps import SessionDep, WriterDep, get_corpora
from service.api.errors import field_error
from service.api.routes.studies import ID_PATTERN, IdempotencyKey, study_public
from service.api.schemas import BatchCreate, BatchPublic, ErrorPublic
from service.models import Batch
from service.validation import batch_entries, parse_batch_text, request_hash, validate_batch

router = APIRouter(prefix="/batches", tags=["batches"])

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
BATCH_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": BatchCreate.model_json_schema()},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary",
                                    "description": 'a YAML or JSON file: {"studies": [StudySpec, ...]}'},
                           "name": {"type": "string", "maxLength": 200}}}},
        "application/yaml": {"schema": {"type": "string", "description": "the batch as YAML text"}},
    },
}  # fmt: skip


def batch_public(batch: Batch) -> BatchPublic:
    studies = [study_public(s) for s in batch.studies]
    counts = Counter(s.status for s in studies)
    if counts.get("queued", 0) == len(studies):
        overall = "queued"
    elif counts.get("queued", 0) or counts.get("running", 0):
        overall = "running"
    else:
        overall = "finished"
    return BatchPublic(id=batch.id, name=batch.name, status=overall, counts=dict(counts),  # type: ignore[arg-type]
                       study_ids=[s.id for s in studies], studies=studies, created_at=batch.created_at)  # fmt: skip


async def _read_document(request: Request) -> tuple[Any, str | None]:
    """The batch document from a JSON body, a YAML body or a multipart file upload; (document, name)."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=10)
        except Exception as exc:  # malformed multipart
            raise ConfigError("file", f"could not read the upload ({type(exc).__name__}); send one file field") from None
        upload, name = form.get("file"), form.get("name")
        if not isinstance(upload, UploadFile):
            raise ConfigError("file", "send the batch as a file field named `file` (YAML or JSON)")
        text = _decode(await upload.read())
        await form.close()
        return parse_batch_text(text), name if isinstance(name, str) and name else None
    body = await request.body()
    if ctype in YAML_TYPES:
        return parse_batch_text(_decode(body)), None
    if ctype.endswith("json") or not ctype:
        try:
            return json.loads(body), None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("body", f"not valid JSON ({exc}); check the syntax") from None
    raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                        "send JSON, YAML (application/yaml) or a multipart file upload")  # fmt: skip


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("file", "not UTF-8 text; save the batch file as UTF-8") from None


@router.post("", status_code=202, response_model=BatchPublic, dependencies=[WriterDep], openapi_extra={"requestBody": BATCH_BODY},
             responses={422: {"model": ErrorPublic, "description": "one error per bad entry (index, field, fix)"}})  # fmt: skip
async def create_batch(request: Request, idempotency_key: IdempotencyKey = None) -> Any:
    """Queue many studies: JSON `{"studies": [StudySpec, ...]}`, the same as YAML, or a file upload.

    Nothing is stored unless every entry is valid; a 422 lists each bad entry's index, field and fix.
    """
    document, form_name = await _read_document(request)
    entries, name = batch_entries(document)
    digest = request_hash({"document": document, "name": form_name})
    settings = request.app.state.settings
    return await run_in_threadpool(_create, request, entries, name or form_name, digest, idempotency_key,
                                   settings.max_batch_studies)  # fmt: skip


def _create(request: Request, entries: list[Any], name: str | None, digest: str, key: str | None, limit: int) -> Any:
    with request.app.state.sessions() as session:
        if key is not None:
            existing = crud.get_batch_by_idempotency_key(session, key=key)
            if existing is not None:
                return _replay(existing, digest)
        specs, errors = validate_batch(entries, limit=limit, session=session, corpora=get_corpora(request))
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)
        try:
            batch = crud.create_batch(session, specs=specs, name=name, idempotency_key=key, request_hash=digest)
            session.commit()
        except IntegrityError:
            session.rollback()
            existing = crud.get_batch_by_idempotency_key(session, key=key or "")
            if existing is None:
                raise
            return _replay(existing, digest)
        return JSONResponse(batch_public(batch).model_dump(mode="json"), status_code=202)


def _replay(existing: Batch, digest: str) -> JSONResponse:
    if existing.request_hash != digest:
        error = field_error("Idempotency-Key", "this key was used for a different batch; use a new key")
        return JSONResponse({"detail": [error]}, status_code=422)
    return JSONResponse(batch_public(existing).model_dump(mode="json"), status_code=202,
                        headers={"Idempotent-Replayed": "true"})  # fmt: skip


@router.get("/{batch_id}", response_model=BatchPublic, responses={404: {"model": ErrorPublic}})
def get_batch(batch_id: str, session: SessionDep) -> Any:
    """The batch and each of its studies' status and progress."""
    batch = crud.get_batch(session, batch_id=batch_id) if ID_PATTERN.fullmatch(batch_id) else None
    if batch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no batch with id {batch_id!r}")
    return batch_public(batch)
