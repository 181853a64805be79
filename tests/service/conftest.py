"""Fixtures for the service tests: the two database backends, a running app, a finished study.

Every API test runs against SQLite AND PostgreSQL through the `backend` fixture. PostgreSQL comes from
ALPHASEARCH_TEST_POSTGRES_URL (default: 127.0.0.1:5432, database `test`); each test session creates its
own uniquely named database there and drops it afterwards, so runs never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.settings import Settings

ADMIN_URL = os.environ.get("ALPHASEARCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[2]

# A smoke study small enough for a 2-core CI box: 2 widths x 4 trials of 10 steps.
TINY = {
    "preset": "smoke",
    "target_width": 1024,
    "target_depth": 8,
    "trials_per_width": 4,
    "tokens_per_trial": 16 * 64 * 10,
    "eval_interval": 5,
    "warmup_steps": 2,
}


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server, dropped on exit."""
    import psycopg

    try:
        admin = psycopg.connect(_libpq(ADMIN_URL), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable at {ADMIN_URL} ({exc.__class__.__name__}); start it with "
                    "`bash scripts/services.sh` or set ALPHASEARCH_TEST_POSTGRES_URL")  # fmt: skip
    name = f"alphasearch_test_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this session (tests that need no isolation from each other)."""
    with fresh_postgres() as url:
        yield url


@pytest.fixture(scope="class", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database URL, once per backend (the same test class runs on both). PostgreSQL gets a fresh database
    per class, like SQLite's fresh file: one class's queued studies or pooled rows never reach another's
    (its embedded scheduler would train them first, and pooled answers would count them)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'alphasearch.db'}"
        return
    with fresh_postgres() as url:
        yield url


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "executor": "inprocess",
        "scheduler": True,
        "scheduler_poll_s": 0.2,
        "recommendations_ttl_s": 0.0,
        "max_batch_studies": 5,
        "max_body_bytes": 64 * 1024,
        "scheduler_nice": 0,  # tests check behaviour; on a box shared with other jobs a niced trainer crawls
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="class")
def client(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app on `backend` with its embedded scheduler (in-process executor), lifespan included."""
    app = create_app(make_settings(backend, tmp_path_factory.mktemp("data")))
    with TestClient(app) as c:
        yield c


def wait_for(client: Any, study_id: str, statuses: tuple[str, ...], timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        study = client.get(f"/api/v1/studies/{study_id}").json()
        if study["status"] in statuses:
            return study
        if time.monotonic() > deadline:
            raise AssertionError(f"study {study_id} still {study['status']} after {timeout:.0f} s: {study}")
        time.sleep(0.5)


# -- a real server process ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`alphasearch serve` in a subprocess (the real entry point), with its log kept for failures."""

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> Server:
        cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--no-access-log"]
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server did not come up:\n{self.log.read_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: a crash, the hard case for resuming."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def server_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASEARCH_", "RAY_"))}
    env.update(ALPHASEARCH_DATA_DIR=str(tmp / "data"), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env
