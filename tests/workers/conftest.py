"""Shared fixtures: a real two-node Ray cluster on this machine, and per-test study storage."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import optuna
import pytest
import ray

from alphasearch import points
from alphasearch.search import optuna_study_name
from alphasearch.spec import StudySpec
from workers.cluster import LocalCluster, alive_nodes, connect

STATES = optuna.trial.TrialState
# Trial outcomes that are results of training (as opposed to pruned, failed, cancelled, interrupted).
RESULTS = {"completed", "stalled", "diverged"}


@pytest.fixture(scope="session")
def two_node_cluster(tmp_path_factory):
    """A head and a worker node, 1 CPU each, as separate `ray start` processes; stopped by PID at the end."""
    data_dir = tmp_path_factory.mktemp("cluster-data")
    cluster = LocalCluster(nodes=2, cpus_per_node=1, env={"ALPHASEARCH_DATA_DIR": str(data_dir)})
    try:
        cluster.start()
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()


@pytest.fixture(scope="module")
def on_cluster(two_node_cluster):
    """This process connected to the two-node cluster for one test module."""
    ray.shutdown()  # another module may have left an embedded instance
    connect(two_node_cluster.address)
    deadline = time.monotonic() + 30
    while len(alive_nodes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(alive_nodes()) >= 2  # a test may have added a node
    yield two_node_cluster
    ray.shutdown()


@pytest.fixture
def storage_url(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("ALPHASEARCH_DATA_DIR", str(tmp_path))
    return f"sqlite:///{tmp_path / 'studies.db'}"


def smoke_spec(**overrides) -> StudySpec:
    return StudySpec.from_dict({"preset": "smoke", "target_width": 4096, "target_depth": 32, **overrides})


@dataclass
class LaneTrials:
    """The Optuna record of one lane, in the terms the tests check."""

    finished: list[optuna.trial.FrozenTrial]  # counted towards the budget: COMPLETE, PRUNED, final FAIL
    stopped: list[optuna.trial.FrozenTrial]  # cancelled / interrupted: FAIL, re-run when the study resumes
    stale: list[optuna.trial.FrozenTrial]  # a dead driver's: failed by the heartbeat machinery, re-queued
    unfinished: list[optuna.trial.FrozenTrial]  # RUNNING / WAITING: none may be left after a run

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(t.user_attrs.get("outcome") for t in self.finished)


def lane_trials(spec: StudySpec, study_id: str, url: str) -> list[LaneTrials]:
    lanes = []
    for depth in spec.proxy_depths:
        for width in spec.proxy_widths:
            study = optuna.load_study(study_name=optuna_study_name(study_id, width, depth), storage=url)
            lane = LaneTrials([], [], [], [])
            for t in study.get_trials(deepcopy=False):
                if t.state in (STATES.RUNNING, STATES.WAITING):
                    lane.unfinished.append(t)
                elif t.state != STATES.FAIL or t.user_attrs.get("final"):
                    lane.finished.append(t)
                elif not points.stale(t):  # a dead driver's trial now says so: outcome "stale" (issue 17)
                    lane.stopped.append(t)
                else:
                    lane.stale.append(t)
            lanes.append(lane)
    return lanes


def assert_all_accounted_for(spec: StudySpec, study_id: str, url: str) -> list[LaneTrials]:
    """Every lane has exactly its budget of finished trials and none still open: none lost, none twice."""
    lanes = lane_trials(spec, study_id, url)
    for lane in lanes:
        assert len(lane.finished) == spec.trials_per_width, lane.outcomes
        assert not lane.unfinished
    return lanes
