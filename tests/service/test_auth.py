"""Writes need the bearer token when ALPHASEARCH_API_TOKEN is set; reads do not; exposure needs a token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.api.main import create_app
from service.cli import app as cli
from service.settings import Settings, check_bind, is_loopback
from tests.service.conftest import TINY, make_settings

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("auth")
    settings = make_settings(f"sqlite:///{tmp / 'db.sqlite'}", tmp, scheduler=False, api_token=TOKEN)
    with TestClient(create_app(settings)) as c:
        yield c


WRITES = [
    ("/api/v1/studies", {"json": TINY}),
    ("/api/v1/batches", {"json": {"studies": [TINY]}}),
    ("/api/v1/studies/0123456789abcdef/cancel", {}),
    ("/api/v1/corpora", {"content": b"a corpus upload"}),
    ("/api/v1/studies/0123456789abcdef/validations", {"json": {}}),
]


@pytest.mark.parametrize(("path", "kwargs"), WRITES, ids=["study", "batch", "cancel", "corpus", "validation"])
def test_write_without_token_is_401(client: TestClient, path: str, kwargs: dict) -> None:
    r = client.post(path, **kwargs)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in r.json()["detail"]


@pytest.mark.parametrize(("path", "kwargs"), WRITES, ids=["study", "batch", "cancel", "corpus", "validation"])
@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", "Bearer wrong", f"Bearer {TOKEN[:-1]}"])
def test_write_with_wrong_token_is_403(client: TestClient, path: str, kwargs: dict, header: str) -> None:
    assert client.post(path, headers={"Authorization": header}, **kwargs).status_code == 403


def test_other_schemes_count_as_no_token(client: TestClient) -> None:
    assert client.post("/api/v1/studies", json=TINY, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


def test_write_with_token_succeeds_and_reads_are_open(client: TestClient) -> None:
    r = client.post("/api/v1/studies", json=TINY, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 202
    sid = r.json()["id"]
    assert client.get(f"/api/v1/studies/{sid}").status_code == 200
    assert client.get("/api/v1/studies").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.post(f"/api/v1/studies/{sid}/cancel", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_token_is_not_in_settings_repr() -> None:
    assert TOKEN not in repr(Settings(api_token=TOKEN)) and TOKEN not in str(Settings(api_token=TOKEN).model_dump())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_is_fine_without_token(host: str) -> None:
    assert is_loopback(host) and check_bind(host, Settings()) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_exposed_needs_a_token(host: str) -> None:
    assert check_bind(host, Settings(api_token=None)) is not None
    assert check_bind(host, Settings(api_token="")) is not None  # an empty token is no token
    assert check_bind(host, Settings(api_token=TOKEN)) is None


def test_serve_on_all_interfaces_without_token_refuses_and_says_how(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ALPHASEARCH_API_TOKEN", raising=False)
    monkeypatch.setenv("ALPHASEARCH_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "ALPHASEARCH_API_TOKEN" in result.output and "secrets.token_urlsafe" in result.output


def test_deleting_a_corpus_needs_the_token(client: TestClient) -> None:
    path = "/api/v1/corpora/" + "0" * 64
    assert client.delete(path).status_code == 401
    assert client.delete(path, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.delete(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404  # past the guard
    assert client.get("/api/v1/corpora").status_code == 200  # reads are open
