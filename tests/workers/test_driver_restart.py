"""A driver killed mid-study (kill -9) and started again: its in-flight trials are failed, re-queued, run once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import psutil
import pytest

from alphasearch.search import StudyRunner
from tests.workers.conftest import RESULTS, assert_all_accounted_for, lane_trials, smoke_spec
from workers.ray_executor import RayExecutor

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_a_restarted_driver_reruns_the_trials_the_dead_one_had_in_flight(on_cluster, storage_url):
    spec = smoke_spec(proxy_widths=[32], tokens_per_trial=16 * 64 * 200)  # 4 trials of 200 steps
    optuna.storages.RDBStorage(storage_url)  # the schema, before two processes race to create it
    args = [json.dumps(spec.to_dict()), "restart", storage_url, on_cluster.address]
    driver = subprocess.Popen([sys.executable, "-m", "tests.workers.run_study", *args], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert driver.poll() is None, "the first driver ended before it could be killed mid-study"
            assert time.monotonic() < deadline, "the first driver never got a trial finished"
            lanes = _try_lane_trials(spec, "restart", storage_url)
            if (
                lanes
                and lanes[0].finished
                and lanes[0].unfinished
                and all(_training(t) for t in lanes[0].unfinished)
            ):
                break
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    (at_death,) = lane_trials(spec, "restart", storage_url)
    in_flight = {t.number: t.params for t in at_death.unfinished}
    # Ray ends the dead driver's runs itself: nothing trains on for a driver that will never read it.
    deadline = time.monotonic() + 30
    while _training_processes(on_cluster):
        assert time.monotonic() < deadline, f"orphaned runs still training: {_training_processes(on_cluster)}"
        time.sleep(0.5)

    # The new driver waits for the dead one's heartbeats to go stale (GRACE_PERIOD_S), then re-runs them.
    with RayExecutor(address=on_cluster.address) as executor:
        assert StudyRunner(spec, "restart", storage_url, executor).run() == "completed"

    (lane,) = assert_all_accounted_for(spec, "restart", storage_url)
    assert set(lane.outcomes) <= RESULTS
    # Each trial the dead driver had in flight was failed once and re-run exactly once with its alphas.
    assert {t.number for t in lane.stale} == set(in_flight)
    for number, params in in_flight.items():
        reruns = [
            t
            for t in lane.finished
            if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == number
        ]
        assert len(reruns) == 1 and reruns[0].params == params


def _training(trial: optuna.trial.FrozenTrial) -> bool:
    """Started a second ago or more: past `ask`, heartbeat recorded, the run under way.

    NOTE: a driver killed in the milliseconds between `study.ask()` and its first `record_heartbeat`
    leaves a RUNNING trial without a heartbeat, which Optuna never counts as stale, so the next driver
    waits for it forever. That window is a separate gap in the driver (ask, then heartbeat), not what
    this test is about.
    """
    return trial.datetime_start is not None and (datetime.now() - trial.datetime_start).total_seconds() >= 1.0


def _training_processes(cluster) -> list[str]:
    """Titles of the cluster's worker processes busy with a trial (Ray titles them after the task)."""
    titles = []
    for pid in cluster.pids():
        try:
            title = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if title.startswith("ray::alphasearch trial"):
            titles.append(title)
    return titles


def _try_lane_trials(spec, study_id, url):
    try:
        return lane_trials(spec, study_id, url)
    except KeyError:  # the first driver has not created the study yet
        return None
