"""Request dependencies as Annotated aliases: SessionDep, SettingsDep, CorporaDep, and the write guard."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.corpora import Corpora
from service.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="Needed for writes when the server has ALPHASEARCH_API_TOKEN set.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_corpora(request: Request) -> Corpora:
    return Corpora.from_settings(request.app.state.settings)


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
CorporaDep = Annotated[Corpora, Depends(get_corpora)]  # the corpora a request may name (service/corpora.py)


def require_writer(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """With a token configured: no credentials -> 401, wrong token -> 403 (constant-time comparison)."""
    token = settings.token
    if token is None:
        return
    if credentials is None or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this server needs `Authorization: Bearer <token>` for writes (the value of ALPHASEARCH_API_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong API token")


WriterDep = Depends(require_writer)
