"""The product's default path end to end: `alphasearch serve` with no configuration (SQLite in the data
dir, embedded scheduler, Ray executor), a batch submitted with `alphasearch submit`, followed with
`alphasearch status`, and answered by `alphasearch recommend` (DESIGN §7, issue 5's "must show").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import ROOT, TINY, Server, server_env


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


@pytest.mark.slow
def test_serve_submit_status_recommend_on_the_embedded_default(tmp_path: Path) -> None:
    env = server_env(tmp_path)  # nothing configured: SQLite in the data dir, Ray, scheduler in the server
    server = Server(env, tmp_path / "server.log").start()
    try:
        assert httpx.get(f"{server.url}/healthz", timeout=30).json()["scheduler"] == "running"
        batch_file = tmp_path / "batch.yaml"
        batch_file.write_text("studies:\n  - " + json.dumps({**TINY, "name": "default-path"}) + "\n")
        submitted = cli("submit", str(batch_file), "--server", server.url, "--json", env=env)
        assert submitted.returncode == 0, submitted.stderr
        [sid] = json.loads(submitted.stdout)["study_ids"]

        deadline = time.monotonic() + 420
        while (study := httpx.get(f"{server.url}/api/v1/studies/{sid}", timeout=30).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, (server.log.read_text()[-3000:])
            time.sleep(1.0)
        assert study["status"] == "completed", study["error"]
        assert (tmp_path / "data" / "alphasearch.db").exists()  # the embedded default database

        status = cli("status", sid, "--server", server.url, env=env)
        assert status.returncode == 0 and "completed" in status.stdout and "alpha_attn" in status.stdout
        listing = cli("status", "--server", server.url, env=env)
        assert listing.returncode == 0 and sid in listing.stdout
        # Pooled answers come only from studies trained for this target (width-matched init: issue 14 item 5).
        width, depth = str(TINY["target_width"]), str(TINY["target_depth"])
        rec = cli("recommend", "--width", width, "--depth", depth, "--server", server.url, "--json", env=env)
        assert rec.returncode == 0, rec.stderr
        answer = json.loads(rec.stdout)
        assert answer["width"] == TINY["target_width"] and answer["studies"] == [sid] and answer["alpha_attn"] > 0
        unknown = cli("status", "0123456789abcdef", "--server", server.url, env=env)
        assert unknown.returncode == 2 and "404" in unknown.stderr
    finally:
        server.stop()


def test_submit_reports_every_bad_entry(tmp_path: Path) -> None:
    """`alphasearch submit` against a real server: a bad batch is refused entry by entry, nothing queued."""
    env = server_env(tmp_path, ALPHASEARCH_SCHEDULER="false")
    server = Server(env, tmp_path / "server.log").start()
    try:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"studies": [TINY, {**TINY, "target_width": 48}, {**TINY, "seeds": 0}]}))
        result = cli("submit", str(bad), "--server", server.url, env=env)
        assert result.returncode == 2
        assert "entry 1: proxy_widths" in result.stderr and "entry 2: seeds" in result.stderr
        assert httpx.get(f"{server.url}/api/v1/studies").json()["count"] == 0
        down = cli("recommend", "--width", "4096", "--depth", "32", "--server", "http://127.0.0.1:9", env=env)
        assert down.returncode == 2 and "cannot reach" in down.stderr
    finally:
        server.stop()
