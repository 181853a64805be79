"""The service's configuration: one pydantic-settings class read from the environment (DESIGN §7).

Every value is optional on one machine. The names users set are the documented ones:
ALPHASEARCH_DATABASE_URL, ALPHASEARCH_DATA_DIR, ALPHASEARCH_API_TOKEN, RAY_ADDRESS, plus the service's own
knobs below, all prefixed ALPHASEARCH_. The token is a secret: it has no default, never appears in a repr
or a log line, and binding to a non-loopback address without it is refused (`check_bind`).

    >>> Settings(executor="inprocess", scheduler=False).executor
    'inprocess'
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

TOKEN_HINT = (
    "set ALPHASEARCH_API_TOKEN to a long random secret first, e.g.\n"
    "  export ALPHASEARCH_API_TOKEN=\"$(python -c 'import secrets; print(secrets.token_urlsafe(32))')\"\n"
    "then give clients the same value (`--token` or `Authorization: Bearer <token>`); "
    "or bind to 127.0.0.1 for local use"
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALPHASEARCH_", extra="ignore", populate_by_name=True)

    database_url: str | None = None  # None: SQLite file in the data dir (the embedded default)
    data_dir: Path | None = None  # None: ~/.local/share/alphasearch (the library's default)
    api_token: SecretStr | None = None  # set -> every write needs `Authorization: Bearer <token>`
    ray_address: str | None = Field(default=None, validation_alias=AliasChoices("RAY_ADDRESS", "ray_address"))
    executor: Literal["ray", "inprocess"] = "ray"  # ray: parallel trials; inprocess: one at a time, no setup
    scheduler: bool = True  # run the scheduler inside `serve`; off when `alphasearch scheduler` runs apart
    scheduler_slots: int = Field(default=1, ge=1, le=64)  # studies one scheduler drives at once
    scheduler_poll_s: float = Field(default=2.0, gt=0)  # idle scheduler looks for queued studies this often
    # A running study whose scheduler stopped renewing its lease this long ago is taken over (resumed).
    scheduler_lease_s: float = Field(default=30.0, ge=1)
    # CPU priority of the scheduler's threads and of what they start (an embedded Ray instance and its
    # workers, in-process training): training is batch work, the API is interactive (docs/benchmarks.md).
    scheduler_nice: int = Field(default=10, ge=0, le=19)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)  # larger request bodies get 413
    max_batch_studies: int = Field(default=100, ge=1)  # larger batches get 422
    # GET /recommendations re-checks which studies finished at most this often (a cache, not a delay for
    # studies finished by this process's own scheduler, which invalidates it at once).
    recommendations_ttl_s: float = Field(default=1.0, ge=0)
    # GET /studies/{id} serves a study's JSON from memory for at most this long (0: always from the
    # database); changes made by this process show at once (service/snapshots.py).
    study_cache_ttl_s: float = Field(default=1.0, ge=0)
    db_wait_s: float = Field(default=30.0, ge=0)  # start-up waits this long for the database
    # Corpora (service/corpora.py): over the API a study names an uploaded corpus or one under corpus_dir,
    # never a path of the client's choosing. Uploads larger than max_corpus_bytes get 413.
    corpus_dir: Path | None = None
    max_corpus_bytes: int = Field(default=100 * 1024 * 1024, ge=1)

    @cached_property
    def resolved_data_dir(self) -> Path:
        if self.data_dir is not None:
            path = self.data_dir.expanduser()
            path.mkdir(parents=True, exist_ok=True)
            return path
        from alphasearch.config import default_data_dir

        return default_data_dir()

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'alphasearch.db'}"

    @property
    def token(self) -> str | None:
        return (self.api_token.get_secret_value() or None) if self.api_token else None  # empty = unset


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so it counts as exposed


def check_bind(host: str, settings: Settings) -> str | None:
    """Why serving on `host` is refused, or None when it is fine (loopback, or a token is set)."""
    if is_loopback(host) or settings.token:
        return None
    return f"refusing to serve on {host} without an API token: anyone who can reach it could submit work; " + TOKEN_HINT
