"""/api/v1/corpora: upload, list and delete the corpora a study may name (service/corpora.py).

An upload is the raw body (any content type but multipart) or a multipart form with a file field `file`;
it is streamed to disk as it arrives (never held whole in memory) and refused with 413 past
ALPHASEARCH_MAX_CORPUS_BYTES. The answer's `corpus` (upload:<sha256>) is what a study's `corpus` takes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from python_multipart.multipart import MultipartParser, parse_options_header

from alphasearch.errors import ConfigError
from service import crud
from service.api.deps import CorporaDep, SessionDep, WriterDep
from service.api.schemas import CorporaPublic, CorpusPublic, ErrorPublic
from service.corpora import UPLOAD_PREFIX, CorpusTooLarge, Upload

router = APIRouter(prefix="/corpora", tags=["corpora"])

UPLOAD_BODY = {
    "required": True,
    "content": {
        "text/plain": {"schema": {"type": "string", "description": "the corpus text (any bytes: it is byte-level)"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary", "description": "the corpus text"}}}},
    },
}  # fmt: skip


@router.post("", response_model=CorpusPublic, status_code=201, dependencies=[WriterDep], openapi_extra={"requestBody": UPLOAD_BODY},
             responses={200: {"model": CorpusPublic, "description": "the same content was uploaded before"},
                        413: {"model": ErrorPublic, "description": "larger than ALPHASEARCH_MAX_CORPUS_BYTES"},
                        422: {"model": ErrorPublic, "description": "empty, or a malformed multipart body"}})  # fmt: skip
async def upload_corpus(
    request: Request,
    corpora: CorporaDep,
    name: Annotated[str | None, Query(max_length=200, description="a name to list it by (default: the file's)")] = None,
) -> Any:
    """Store a corpus on the server; answer its `corpus` name for studies (`upload:<sha256>`).

    Content-addressed: the same bytes uploaded twice are stored once (200 the second time)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > corpora.max_bytes + 64 * 1024:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, _too_large(corpora.max_bytes))
    upload = await run_in_threadpool(corpora.begin_upload)
    try:
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() == "multipart/form-data":
            filename = await _receive_multipart(request, ctype, upload)
        else:
            filename = None
            async for chunk in request.stream():
                upload.write(chunk)
        info, created = await run_in_threadpool(upload.finish, name or filename)
    except CorpusTooLarge:
        upload.abort()
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, _too_large(corpora.max_bytes)) from None
    except BaseException:
        upload.abort()
        raise
    body = CorpusPublic(**info.to_dict()).model_dump(mode="json")
    return JSONResponse(body, status_code=201 if created else 200)


async def _receive_multipart(request: Request, ctype: str, upload: Upload) -> str | None:
    """Stream the `file` field of a multipart body into `upload`; return its file name."""
    _, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ConfigError("file", "a multipart body needs a boundary; send the corpus as a file field named `file`")
    state: dict[str, Any] = {"field": b"", "value": b"", "headers": {}, "in_file": False, "filename": None, "seen": False}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        is_file = disposition.get(b"name") == b"file" and not state["seen"]
        state["in_file"] = is_file
        if is_file:
            state["seen"] = True
            raw = disposition.get(b"filename")
            state["filename"] = raw.decode("utf-8", "replace") if raw else None

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["in_file"]:
            upload.write(data[start:end])

    def on_part_end() -> None:
        state["in_file"], state["headers"] = False, {}

    callbacks = {"on_header_field": on_header_field, "on_header_value": on_header_value,
                 "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
                 "on_part_data": on_part_data, "on_part_end": on_part_end}  # fmt: skip
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except CorpusTooLarge:
        raise
    except Exception as exc:  # a malformed body: the client's mistake
        raise ConfigError("file", f"could not read the multipart body ({type(exc).__name__}); send one file field "
                                  "named `file`") from None  # fmt: skip
    if not state["seen"]:
        raise ConfigError("file", "no file field named `file` in the multipart body; send the corpus as `file`")
    return state["filename"]


def _too_large(limit: int) -> str:
    return (f"the corpus is larger than this server's limit of {limit:,} bytes; upload a smaller one, or ask the "
            "operator to raise ALPHASEARCH_MAX_CORPUS_BYTES")  # fmt: skip


@router.get("", response_model=CorporaPublic)
def list_corpora(corpora: CorporaDep) -> Any:
    """The corpora a study's `corpus` may name: uploaded ones (newest first), then the server's corpus folder."""
    items = [CorpusPublic(**c.to_dict()) for c in [*corpora.uploaded(), *corpora.on_server()]]
    return CorporaPublic(data=items, count=len(items))


@router.delete("/{sha256}", status_code=204, dependencies=[WriterDep],
               responses={404: {"model": ErrorPublic}, 409: {"model": ErrorPublic, "description": "a queued or running study uses it"}})  # fmt: skip
def delete_corpus(sha256: str, corpora: CorporaDep, session: SessionDep) -> Response:
    """Delete an uploaded corpus. Refused (409) while a queued or running study or calibration names it."""
    info = corpora.get(sha256)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no uploaded corpus {sha256!r}")
    users = crud.active_users_of_corpus(session, corpus=f"{UPLOAD_PREFIX}{sha256}")
    if users:
        raise HTTPException(status.HTTP_409_CONFLICT, f"corpus {info.corpus} is in use by {', '.join(users[:5])}; "
                                                      "cancel those first or wait for them to finish")  # fmt: skip
    corpora.delete(sha256)
    return Response(status_code=204)
