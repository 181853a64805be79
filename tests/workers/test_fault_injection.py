"""Fault injection (issue 17): the study driver killed at random moments gives the same answer.

The real `alphasearch study run` (in-process executor, smoke-sized study) is killed by SIGKILL or SIGTERM
at random moments (after a random number of finished trials plus a random delay: mid-trial, between
trials, mid-write) and started again until it completes. Its result must equal an uninterrupted run of the
same spec (a separate database and result cache): the same unique alpha points with the same losses per
lane, the same per-width optima and recommendation; 0 points lost, 0 finished twice, 0 trials left
RUNNING or WAITING. Grid and random samplers, SQLite and PostgreSQL.

CI size: 2 kills per run. A longer run: ALPHASEARCH_FAULT_KILLS=6 ALPHASEARCH_FAULT_SAMPLERS=grid,random,tpe,gp
ALPHASEARCH_FAULT_SEED=<n> (the numbers of such a run are in docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest

from alphasearch.spec import StudySpec
from tests.service.conftest import ROOT, postgres_url  # noqa: F401 - the fixture, for the PostgreSQL runs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

KILLS = int(os.environ.get("ALPHASEARCH_FAULT_KILLS", "2"))
SAMPLERS = os.environ.get("ALPHASEARCH_FAULT_SAMPLERS", "grid,random").split(",")
SEED = int(os.environ.get("ALPHASEARCH_FAULT_SEED", "17"))
STATES = optuna.trial.TrialState

# The smoke preset cut down: 2 widths x 4 points of 10 steps (+ the RMSNorm baselines).
FIELDS = {
    "proxy_widths": [32, 64], "proxy_depths": [1], "trials_per_width": 4, "tokens_per_trial": 8 * 32 * 10,
    "batch_size": 8, "seq_len": 32, "eval_interval": 5, "warmup_steps": 2,
}  # fmt: skip
_references: dict[str, dict[str, Any]] = {}


def command(sampler: str, url: str, out: Path) -> list[str]:
    sets = [f"{k}={json.dumps(v)}" for k, v in {**FIELDS, "sampler": sampler}.items()]
    return [sys.executable, "-m", "tests.workers.fast_grace_cli", "study", "run", "--preset", "smoke",
            "--target-width", "1024", "--target-depth", "8", "--executor", "inprocess", "--database", url,
            "--out", str(out), *[arg for s in sets for arg in ("--set", s)]]  # fmt: skip


def start(cmd: list[str], data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASEARCH_", "RAY_"))}
    env.update(ALPHASEARCH_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)


def study_id(sampler: str) -> str:
    """The id `study run` gives this study (derived from the spec, so a re-run resumes it)."""
    spec = StudySpec.from_dict({"preset": "smoke", "target_width": 1024, "target_depth": 8, **FIELDS, "sampler": sampler})
    return f"cli-{spec.fingerprint()}"


def lanes(storage: optuna.storages.RDBStorage, sid: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """The study's Optuna studies (lanes) in the database and their trials."""
    return {
        s.study_name: storage.get_all_trials(s._study_id, deepcopy=False)
        for s in storage.get_all_studies()
        if s.study_name.startswith(f"alphasearch/{sid}/")
    }


def finished(storage: optuna.storages.RDBStorage, sid: str) -> int:
    return sum(t.state in (STATES.COMPLETE, STATES.PRUNED) for ts in lanes(storage, sid).values() for t in ts)


def points(storage: optuna.storages.RDBStorage, sid: str) -> dict[str, dict[tuple[float, float] | None, float]]:
    """Per lane (named without the study id): each finished point's loss; asserts none finished twice."""
    out = {}
    for name, trials in lanes(storage, sid).items():
        done = [t for t in trials if t.state == STATES.COMPLETE]
        keys = [(t.params["alpha_attn"], t.params["alpha_ffn"]) if t.params else None for t in done]
        twice = [k for k, n in Counter(keys).items() if n > 1]
        assert not twice, f"{name}: points finished twice: {twice}"
        out[name.split("/", 2)[2]] = dict(zip(keys, (t.value for t in done), strict=True))
    return out


def assert_close(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and not (math.isnan(a) and math.isnan(b)):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a} != {b}"
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), f"{where}: {a!r} != {b!r}"


def answer(out: Path) -> dict[str, Any]:
    result = json.loads((out / "result.json").read_text())
    return {"recommendation": result["recommendation"], "per_width": result["per_width"], "n_trials": result["n_trials"]}


def reference(sampler: str, tmp: Path) -> dict[str, Any]:
    """The uninterrupted run (once per sampler per session, on SQLite)."""
    if sampler not in _references:
        url, out, log = f"sqlite:///{tmp / 'reference.db'}", tmp / "reference-out", tmp / "reference.log"
        driver = start(command(sampler, url, out), tmp / "reference-data", log)
        assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
        storage = optuna.storages.RDBStorage(url)
        _references[sampler] = {"points": points(storage, study_id(sampler)), "answer": answer(out)}
        storage.engine.dispose()
    return _references[sampler]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_driver_killed_at_random_moments_gives_the_answer_of_an_uninterrupted_run(
    sampler: str, backend: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    expected = reference(sampler, tmp_path_factory.mktemp(f"reference-{sampler}"))
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else f"sqlite:///{tmp_path / 'faulted.db'}"
    rng, sid = random.Random(f"{SEED}-{sampler}-{backend}"), study_id(sampler)
    out, log = tmp_path / "out", tmp_path / "driver.log"
    storage = optuna.storages.RDBStorage(url)  # Optuna's schema, before the driver's first start
    cmd = command(sampler, url, out)
    kills: list[str] = []
    while True:
        driver = start(cmd, tmp_path / "data", log)
        if len(kills) < KILLS:
            target = finished(storage, sid) + rng.randint(1, 3)
            while driver.poll() is None and finished(storage, sid) < target:
                time.sleep(0.25)
            time.sleep(rng.uniform(0.0, 1.0))  # mid-trial, between trials or mid-write
            if driver.poll() is None:
                sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
                driver.send_signal(sig)
                driver.wait(timeout=120)
                kills.append(f"{sig.name} after {finished(storage, sid)} finished")
                continue
        assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
        break
    print(f"{sampler} on {backend}: {len(kills)} kills: {kills}")
    assert kills, "the study finished before any kill: make it longer"

    trials = [t for ts in lanes(storage, sid).values() for t in ts]
    assert not [t for t in trials if t.state in (STATES.RUNNING, STATES.WAITING)]  # 0 left running or queued
    assert all(t.user_attrs.get("outcome") for t in trials if t.state == STATES.FAIL)  # each says why
    assert points(storage, sid) == expected["points"]  # the same points with the same losses: 0 lost, 0 twice, none extra
    assert_close(answer(out), expected["answer"], "result")  # the same optima and recommendation
