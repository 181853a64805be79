"""Corpora over the API (issue 17): a client names a corpus the server owns, never a server path.

Uploaded corpora (raw body or multipart) are stored content-addressed, listed, deleted, size-limited, and
train end to end; names under the operator's corpus folder work; every other `corpus` (absolute paths,
`..`, /proc, links out of the folder, unknown uploads) is a 422 naming `corpus` that echoes no server
path, on POST /studies, /batches and /calibrations alike. SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alphasearch.data import _shakespeare_files
from service.api.main import create_app
from tests.service.conftest import TINY, make_settings, wait_for

LIMIT = 400_000  # ALPHASEARCH_MAX_CORPUS_BYTES for these tests
TEXT = _shakespeare_files()[0].read_bytes()[:300_000]  # enough for TINY's 64-byte windows and its val split


@pytest.fixture(scope="class")
def env(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data, folder = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("corpus-dir")
    (folder / "plays.txt").write_bytes(TEXT)
    (folder / "poems").mkdir()
    (folder / "poems" / "sonnets.txt").write_bytes(TEXT[:200_000])
    (folder / "escape.txt").symlink_to("/etc/passwd")  # a link out of the folder: never followed
    settings = make_settings(backend, data, corpus_dir=folder, max_corpus_bytes=LIMIT)
    with TestClient(create_app(settings)) as client:
        yield {"client": client, "data": data, "folder": folder}


def upload(client: TestClient, body: bytes, **kwargs: Any) -> Any:
    return client.post("/api/v1/corpora", content=body, headers={"content-type": "text/plain"}, **kwargs)


BAD_NAMES = [
    "/etc/passwd", "/etc", "/root", "/proc/self/environ", "../x", "../../../../etc/passwd", "poems/../../x",
    "~/.bashrc", "~root", "C:\\Windows\\win.ini", "..\\x", "escape.txt", "no-such-file.txt", ".",
    "upload:" + "0" * 64, "upload:../../etc/passwd", "upload:", " ",
]  # fmt: skip


class TestCorpora:
    @pytest.mark.parametrize("name", BAD_NAMES)
    def test_a_corpus_the_server_does_not_own_is_422_naming_corpus_and_no_server_path(self, env, name: str) -> None:
        client = env["client"]
        for path, body in (
            ("/api/v1/studies", {**TINY, "corpus": name}),
            ("/api/v1/studies", {**TINY, "corpus": name, "use_calibration": True}),  # looked up by content
            ("/api/v1/batches", {"studies": [TINY, {**TINY, "corpus": name}]}),
            ("/api/v1/calibrations", {"widths": [32], "preset": "smoke", "corpus": name}),
        ):
            r = client.post(path, json=body)
            assert r.status_code == 422, (path, r.text)
            [error] = r.json()["detail"]
            assert error["field"] == "corpus" and "/api/v1/corpora" in error["message"], error  # and the fix
            if path == "/api/v1/batches":
                assert error["index"] == 1
            for secret in ("passwd", "environ", "win.ini", "bashrc", str(env["data"]), str(env["folder"]), "/proc"):
                assert secret not in r.text, (name, r.text)
        assert client.get("/api/v1/studies", params={"limit": 1000}).json()["count"] == 0  # nothing stored

    def test_names_in_the_operators_corpus_folder_are_accepted(self, env) -> None:
        client = env["client"]
        listed = {c["corpus"]: c for c in client.get("/api/v1/corpora").json()["data"]}
        assert listed["plays.txt"]["kind"] == "server" and listed["plays.txt"]["size_bytes"] == len(TEXT)
        assert listed["poems"]["size_bytes"] is None and "escape.txt" not in listed
        for name in ("plays.txt", "poems", "poems/sonnets.txt"):
            r = client.post("/api/v1/studies", json={**TINY, "corpus": name})
            assert r.status_code == 202, r.text
            assert r.json()["spec"]["corpus"] == name  # the name, not the path
            assert client.post(f"/api/v1/studies/{r.json()['id']}/cancel").status_code == 200

    def test_uploads_are_content_addressed_listed_size_limited_and_deletable(self, env) -> None:
        client = env["client"]
        first = upload(client, TEXT[:1000], params={"name": "../../tiny.txt"})
        assert first.status_code == 201, first.text
        body = first.json()
        assert body["corpus"] == f"upload:{body['sha256']}" and body["size_bytes"] == 1000
        assert body["name"] == "tiny.txt"  # no folder part kept
        again = client.post("/api/v1/corpora", files={"file": ("other.txt", TEXT[:1000], "text/plain")})
        assert again.status_code == 200 and again.json()["corpus"] == body["corpus"]  # same bytes, stored once
        multipart = client.post("/api/v1/corpora", files={"file": ("mine.txt", TEXT[:2000], "text/plain")})
        assert multipart.status_code == 201 and multipart.json()["name"] == "mine.txt"
        assert multipart.json()["size_bytes"] == 2000
        listed = [c["corpus"] for c in client.get("/api/v1/corpora").json()["data"] if c["kind"] == "uploaded"]
        assert body["corpus"] in listed and multipart.json()["corpus"] in listed
        for r in (client.get("/api/v1/corpora"), first, multipart):
            assert str(env["data"]) not in r.text

        assert upload(client, b"x" * (LIMIT + 1)).status_code == 413
        too_big = client.post("/api/v1/corpora", files={"file": ("big.txt", b"x" * (LIMIT + 1), "text/plain")})
        assert too_big.status_code == 413
        assert upload(client, b"").status_code == 422
        assert client.post("/api/v1/corpora", files={"other": ("a.txt", b"abc", "text/plain")}).status_code == 422
        assert not [p for p in (env["data"] / "uploaded-corpora").iterdir() if p.suffix == ".part"]  # no debris

        sha = multipart.json()["sha256"]
        assert client.delete(f"/api/v1/corpora/{sha}").status_code == 204
        assert client.delete(f"/api/v1/corpora/{sha}").status_code == 404
        assert client.delete("/api/v1/corpora/..%2F..%2Fetc%2Fpasswd").status_code == 404
        r = client.post("/api/v1/studies", json={**TINY, "corpus": multipart.json()["corpus"]})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "corpus"

    def test_the_cli_client_uploads_a_local_file(self, env, tmp_path: Path) -> None:
        from service.client import Client

        path = tmp_path / "mine-too.txt"
        path.write_bytes(TEXT[:5000])
        client = Client("http://testserver")
        client.http = env["client"]  # the app in this process (a TestClient is an httpx.Client)
        corpus = client.upload_corpus(path)
        assert corpus["name"] == "mine-too.txt" and corpus["size_bytes"] == 5000
        assert corpus["corpus"].startswith("upload:") and env["client"].get("/api/v1/corpora").text.count(corpus["corpus"]) == 1

    def test_a_study_on_an_uploaded_corpus_trains_end_to_end(self, env) -> None:
        client = env["client"]
        corpus = upload(client, TEXT, params={"name": "shakespeare-part.txt"}).json()
        r = client.post("/api/v1/studies", json={**TINY, "proxy_widths": [32], "corpus": corpus["corpus"]})
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        busy = client.delete(f"/api/v1/corpora/{corpus['sha256']}")  # queued or running: in use
        assert busy.status_code == 409 and sid in busy.json()["detail"]
        study = wait_for(client, sid, ("completed", "failed", "cancelled"), timeout=900)  # a busy CI box
        assert study["status"] == "completed", study["error"]
        trials = client.get(f"/api/v1/studies/{sid}/trials").json()["data"]
        assert len([t for t in trials if t["state"] == "COMPLETE"]) == 4
        assert all(t["value"] is not None for t in trials if t["state"] == "COMPLETE")
        for text in (client.get(f"/api/v1/studies/{sid}").text, client.get(f"/api/v1/studies/{sid}/trials").text):
            assert str(env["data"]) not in text and corpus["corpus"] in client.get(f"/api/v1/studies/{sid}").text
        assert client.delete(f"/api/v1/corpora/{corpus['sha256']}").status_code == 204  # finished: free to go


def test_the_corpus_dir_setting_is_read_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    from service.settings import Settings

    monkeypatch.setenv("ALPHASEARCH_CORPUS_DIR", str(tmp_path))
    monkeypatch.setenv("ALPHASEARCH_MAX_CORPUS_BYTES", "12345")
    settings = Settings()
    assert settings.corpus_dir == tmp_path and settings.max_corpus_bytes == 12345
    assert os.environ["ALPHASEARCH_CORPUS_DIR"] == str(tmp_path)
