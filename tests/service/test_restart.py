"""Restarting the service resumes its studies without losing or duplicating trials.

A real `alphasearch serve` process (SQLite, in-process executor) is stopped twice mid-study: once
gracefully (SIGTERM: the scheduler interrupts its runner and releases the lease) and once by SIGKILL (a
crash: the lease lapses, and Optuna fails and re-queues the trial that was in flight after its grace
period). After the last start the study completes with exactly its budget of finished trials per proxy
width, no alpha point finished twice, and a recommendation.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import optuna
import pytest

from alphasearch.search import optuna_study_name
from tests.service.conftest import TINY, Server, free_port, server_env

# The kill lands mid-trial whatever the trial length: progress is written after the next trial was asked.
SPEC = {**TINY, "name": "restart"}


def wait_done_at_least(url: str, study_id: str, n: int, timeout: float = 400.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = httpx.get(f"{url}/api/v1/studies/{study_id}", timeout=10).json()
        if study["progress"]["trials_done"] >= n or study["status"] != "running" and study["status"] != "queued":
            return study
        time.sleep(0.2)
    raise AssertionError(f"study {study_id} did not reach {n} finished trials in {timeout:.0f} s")


@pytest.mark.slow
def test_restart_resumes_without_losing_or_duplicating_trials(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'alphasearch.db'}"
    env = server_env(tmp_path, ALPHASEARCH_DATABASE_URL=db, ALPHASEARCH_EXECUTOR="inprocess",
                     ALPHASEARCH_SCHEDULER_LEASE_S="3", ALPHASEARCH_SCHEDULER_POLL_S="0.3",
                     ALPHASEARCH_SCHEDULER_NICE="0")  # fmt: skip
    port, log = free_port(), tmp_path / "server.log"
    server = Server(env, log, port).start()
    try:
        r = httpx.post(f"{server.url}/api/v1/studies", json=SPEC, headers={"Idempotency-Key": "restart-1"}, timeout=30)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]

        # 1. graceful stop mid-study; the next start resumes at once (lease released)
        assert wait_done_at_least(server.url, sid, 2)["status"] == "running"
        server.stop()
        server = Server(env, log, port).start()
        # a retried submission after the restart is answered with the same study, not a twin
        again = httpx.post(f"{server.url}/api/v1/studies", json=SPEC, headers={"Idempotency-Key": "restart-1"}, timeout=30)
        assert again.json()["id"] == sid

        # 2. crash mid-trial (SIGKILL); the lease lapses and the in-flight trial is re-run
        before = wait_done_at_least(server.url, sid, 5)
        assert before["status"] == "running", before
        server.kill()
        server = Server(env, log, port).start()

        deadline = time.monotonic() + 400
        while (study := httpx.get(f"{server.url}/api/v1/studies/{sid}", timeout=10).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"study did not finish after the restarts:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        assert study["status"] == "completed", study["error"]
        assert study["progress"]["trials_done"] == study["progress"]["trials_total"] == 8
        assert httpx.get(f"{server.url}/api/v1/studies/{sid}/recommendation", timeout=10).status_code == 200
        assert httpx.get(f"{server.url}/api/v1/studies", timeout=10).json()["count"] == 1
    finally:
        server.stop()

    killed_mid_trial = 0
    for width in (32, 64):
        trials = optuna.load_study(study_name=optuna_study_name(sid, width, 2), storage=db).get_trials()
        # the trial in flight at the SIGKILL: failed as stale, its point re-queued and finished once
        killed_mid_trial += sum(t.state == optuna.trial.TrialState.FAIL for t in trials)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == SPEC["trials_per_width"], [(t.number, t.state, t.user_attrs.get("outcome")) for t in trials]
        points = Counter((t.params["alpha_attn"], t.params["alpha_ffn"]) for t in complete)
        assert max(points.values()) == 1, f"an alpha point finished twice at width {width}: {points}"
    assert killed_mid_trial == 1
    assert "Traceback" not in log.read_text()
