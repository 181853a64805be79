"""A small HTTP client for the REST API, used by `alphasearch submit | recommend | status`.

Submissions carry an Idempotency-Key and are retried with the same key when the connection fails, so a
flaky network never creates twin studies.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from alphasearch.errors import AlphaSearchError

DEFAULT_SERVER = "http://127.0.0.1:8000"
RETRIES = 3


class ClientError(AlphaSearchError):
    """The server said no (4xx/5xx) or could not be reached; the message says what to do."""


def default_server() -> str:
    return os.environ.get("ALPHASEARCH_SERVER", DEFAULT_SERVER)


class Client:
    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.server = (server or default_server()).rstrip("/")
        token = token or os.environ.get("ALPHASEARCH_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _request(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> httpx.Response:
        for attempt in range(RETRIES):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == RETRIES - 1 or not idempotent:
                    raise ClientError(f"cannot reach {self.server} ({type(exc).__name__}); is `alphasearch serve` "
                                      "running there? (--server URL or ALPHASEARCH_SERVER)") from exc  # fmt: skip
                time.sleep(1.0 + attempt)
                continue
            if response.status_code in (502, 503, 504) and attempt < RETRIES - 1 and idempotent:
                time.sleep(1.0 + attempt)
                continue
            if response.status_code >= 400:
                raise ClientError(_explain(response))
            return response
        raise AssertionError("unreachable")

    def submit_file(self, path: Path, *, key: str | None = None) -> dict[str, Any]:
        """POST the file as a batch upload; retried safely thanks to the Idempotency-Key."""
        key = key or secrets.token_urlsafe(16)
        content = path.read_bytes()
        return self._request(
            "POST", "/api/v1/batches", headers={"Idempotency-Key": key}, files={"file": (path.name, content)}
        ).json()

    def upload_corpus(self, path: Path) -> dict[str, Any]:
        """POST the file to /corpora. Content-addressed, so a retried upload stores nothing twice; the bytes
        are read whole so that a retry sends them all again."""
        return self._request(
            "POST", "/api/v1/corpora", params={"name": path.name}, content=path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        ).json()  # fmt: skip

    def recommendation(self, **params: Any) -> dict[str, Any]:
        return self._request("GET", "/api/v1/recommendations", params={k: v for k, v in params.items() if v}).json()

    def study(self, study_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/studies/{study_id}").json()

    def studies(self, limit: int = 50) -> dict[str, Any]:
        return self._request("GET", "/api/v1/studies", params={"limit": limit}).json()

    def study_recommendation(self, study_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/studies/{study_id}/recommendation").json()


def _explain(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:500]
    if isinstance(detail, list):
        lines = []
        for err in detail:
            where = f"entry {err['index']}: " if err.get("index") is not None else ""
            lines.append(f"  {where}{err.get('field')}: {err.get('message')}")
        detail = "\n" + "\n".join(lines)
    hint = {401: " (give --token or set ALPHASEARCH_API_TOKEN)", 403: " (check --token)"}.get(response.status_code, "")
    return f"HTTP {response.status_code}{hint}: {detail}"
