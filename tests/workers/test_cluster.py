"""Studies on a real two-node Ray cluster: spread over nodes, worker crashes, pruning, cancellation."""

from __future__ import annotations

import os
import signal
import time

import optuna
import psutil
import pytest

from alphasearch.executor import Failed, TrialRequest
from alphasearch.search import CANCELLED, StudyRunner, optuna_study_name
from tests.workers.conftest import RESULTS, assert_all_accounted_for, lane_trials, smoke_spec
from workers.cluster import alive_nodes
from workers.ray_executor import RayExecutor

pytestmark = pytest.mark.slow


def test_study_completes_with_trials_on_both_nodes(on_cluster, storage_url):
    spec = smoke_spec(proxy_widths=[32, 64], trials_per_width=2)
    with RayExecutor(address=on_cluster.address) as executor:
        assert executor.slots == 2  # one CPU per node, one CPU per trial
        assert executor.capacity == 3  # and one run waiting in Ray's queue for the first slot that frees
        assert StudyRunner(spec, "two-nodes", storage_url, executor).run() == "completed"

    lanes = assert_all_accounted_for(spec, "two-nodes", storage_url)
    nodes_used = set()
    for lane in lanes:
        assert set(lane.outcomes) <= RESULTS
        for trial in lane.finished:
            (run,) = trial.user_attrs["runs"]
            worker = run["diagnostics"]["worker"]
            assert worker["device"] == "cpu"
            nodes_used.add(worker["node_id"])
    assert nodes_used == {node["NodeID"] for node in alive_nodes()}


class KillOneWorker(RayExecutor):
    """Kills (SIGKILL) the worker process of the first run that reported progress, once."""

    victim: dict | None = None

    def poll(self, timeout):
        events = super().poll(timeout)
        if self.victim is None:
            for where in self.running_trials().values():
                if where["last_step"] >= 10:
                    self.victim = where
                    os.kill(where["pid"], signal.SIGKILL)
                    break
        return events


def test_killed_worker_is_rerun_and_the_reason_stored(on_cluster, storage_url):
    # 400 steps: the kill (at step >= 10) lands mid-run even when the driver polls slowly (a kill after the
    # run ended would cost no retry, and nothing would be tested)
    spec = smoke_spec(proxy_widths=[32], tokens_per_trial=16 * 64 * 400)
    with KillOneWorker(address=on_cluster.address) as executor:
        assert StudyRunner(spec, "chaos", storage_url, executor, max_retries=2).run() == "completed"
        victim = executor.victim
    assert victim is not None, "no run reported progress before the study ended"
    assert _gone(victim["pid"])

    (lane,) = assert_all_accounted_for(spec, "chaos", storage_url)
    assert set(lane.outcomes) <= RESULTS  # the crash cost a re-run, not a trial
    retried = [t for t in lane.finished if t.user_attrs.get("errors")]
    assert len(retried) == 1
    (reason,) = retried[0].user_attrs["errors"]
    assert reason.startswith("worker crash, run again (retry 1):") and "WorkerCrashedError" in reason
    assert str(victim["pid"]) in reason
    (run,) = retried[0].user_attrs["runs"]
    assert run["steps_done"] == spec.steps and run["diagnostics"]["worker"]["pid"] != victim["pid"]


def test_losing_trials_are_pruned_before_their_last_step(on_cluster, storage_url):
    spec = smoke_spec(
        proxy_widths=[32], pruner="asha", tokens_per_trial=16 * 64 * 200
    )  # 200 steps, eval every 10
    study = optuna.create_study(
        study_name=optuna_study_name("pruning", 32, 2), storage=storage_url, direction="minimize"
    )
    # Two sound points first, then two far outside the good region (val loss ~0.6 nats worse at step 10).
    for alpha_attn, alpha_ffn in [(1.0, 1.0), (4.0, 4.0), (0.05, 0.02), (0.06, 0.025)]:
        study.enqueue_trial({"alpha_attn": alpha_attn, "alpha_ffn": alpha_ffn})

    with RayExecutor(address=on_cluster.address) as executor:
        assert StudyRunner(spec, "pruning", storage_url, executor).run() == "completed"

    (lane,) = assert_all_accounted_for(spec, "pruning", storage_url)
    pruned = [t for t in lane.finished if t.state == optuna.trial.TrialState.PRUNED]
    assert {t.params["alpha_attn"] for t in pruned} >= {0.05, 0.06}
    cut_short = [t for t in pruned if t.user_attrs["runs"][0]["steps_done"] < spec.steps]
    assert cut_short, [t.user_attrs["runs"][0]["steps_done"] for t in pruned]
    assert all(t.user_attrs["runs"][0]["stopped"] == "pruned" for t in cut_short)
    assert lane.outcomes["completed"] >= 1


def test_cancelling_a_study_stops_its_running_trials_within_10_s(on_cluster, storage_url):
    spec = smoke_spec(tokens_per_trial=16 * 64 * 3000, max_total_tokens=10**9)  # minutes per trial unstopped
    cancel_at: list[float] = []

    with RayExecutor(address=on_cluster.address) as executor:

        def should_cancel() -> bool:
            running = executor.running_trials()
            if not cancel_at and len(running) == 2 and all(w["last_step"] >= 10 for w in running.values()):
                cancel_at.append(time.monotonic())
            return bool(cancel_at)

        outcome = StudyRunner(spec, "cancel", storage_url, executor, should_cancel=should_cancel).run()
        stopped_after = time.monotonic() - cancel_at[0]
        assert executor.running_trials() == {}
        in_flight = executor.capacity

    assert outcome == "cancelled"
    assert stopped_after < 10, f"running trials took {stopped_after:.1f} s to stop"
    trials = [t for lane in lane_trials(spec, "cancel", storage_url) for t in lane.stopped]
    assert len(trials) == in_flight and all(t.user_attrs["outcome"] == "cancelled" for t in trials)
    cut_short = [t for t in trials if t.user_attrs["runs"]]
    assert len(cut_short) == 2  # the two that were training
    for trial in cut_short:
        (run,) = trial.user_attrs["runs"]
        assert run["stopped"] == "cancelled" and 10 <= run["steps_done"] < spec.steps
    for trial in trials:  # the one that waited in Ray's queue never started
        if not trial.user_attrs["runs"]:
            assert trial.user_attrs["errors"] == ["stopped (cancelled) before it started", CANCELLED]


class DeafWorkers(RayExecutor):
    """Never posts stop verdicts, as if each run were stuck in one very long step."""

    def _post_verdict(self, handle, reason):
        pass


def test_a_run_that_ignores_its_stop_is_killed_within_10_s(on_cluster):
    spec = smoke_spec(tokens_per_trial=16 * 64 * 3000, max_total_tokens=10**9)
    request = TrialRequest.build(spec.model_config(32, 2, 1.0, 1.0), spec.train_config(seed=0), None)
    with DeafWorkers(address=on_cluster.address) as executor:
        handle = executor.submit(request, on_progress=lambda step, loss: None)
        deadline = time.monotonic() + 60
        while handle not in executor.running_trials() and time.monotonic() < deadline:
            assert executor.poll(timeout=0.5) == []
        pid = executor.running_trials()[handle]["pid"]
        stopped_at = time.monotonic()
        executor.stop(handle, "cancelled")
        (event,) = executor.poll(timeout=10)
        assert time.monotonic() - stopped_at < 10
    assert isinstance(event, Failed) and not event.infrastructure  # a stop is never re-run
    assert event.error.startswith("killed after it was cancelled")
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, "the worker process outlived its forced stop"
        time.sleep(0.1)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_capacity_grows_when_a_node_joins(on_cluster):
    # Last in this module: the third node stays until the session's cluster is stopped.
    with RayExecutor(address=on_cluster.address) as executor:
        before = executor.slots
        on_cluster.add_node(cpus=1)
        deadline = time.monotonic() + 30
        while executor.slots == before:
            assert time.monotonic() < deadline, "the new node's slot never showed up"
            time.sleep(0.5)
        assert executor.slots == before + 1
