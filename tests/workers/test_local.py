"""The embedded default: no address, no RAY_ADDRESS → a private local Ray instance on this machine."""

from __future__ import annotations

import os
import threading

import pytest
import ray

from alphasearch.errors import ConfigError
from alphasearch.executor import Failed, Finished, TrialRequest
from alphasearch.search import StudyRunner
from tests.workers.conftest import RESULTS, assert_all_accounted_for, smoke_spec
from workers.cluster import connect, trial_slots
from workers.ray_executor import RayExecutor


@pytest.fixture(scope="module")
def embedded_ray():
    """Starts with no Ray connection; whatever the executors start is shut down at the end."""
    ray.shutdown()
    saved = os.environ.pop("RAY_ADDRESS", None)
    try:
        yield
    finally:
        ray.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


def drain(executor: RayExecutor, handle: int) -> Finished | Failed:
    (event,) = executor.poll(timeout=120)
    assert event.handle == handle
    return event


def test_executors_in_short_lived_threads_share_one_embedded_instance(embedded_ray):
    # First in this module, so Ray is not started yet: as in the service, whose scheduler slots are threads.
    ray.shutdown()
    spec = smoke_spec(tokens_per_trial=16 * 64 * 3)
    request = TrialRequest.build(spec.model_config(32, 2, 1.0, 1.0), spec.train_config(seed=0), None)
    events: dict[int, Finished | Failed] = {}

    def one_trial(slot: int) -> None:
        with RayExecutor() as executor:
            events[slot] = drain(executor, executor.submit(request, on_progress=lambda step, loss: None))

    threads = [threading.Thread(target=one_trial, args=(slot,)) for slot in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert sorted(events) == [0, 1, 2]
    # Every thread that may have started Ray has ended; Ray must not have ended with it.
    with RayExecutor() as executor:
        events[3] = drain(executor, executor.submit(request, on_progress=lambda step, loss: None))
    assert all(isinstance(event, Finished) for event in events.values()), [
        getattr(e, "error", "") for e in events.values()
    ]


@pytest.mark.slow
def test_smoke_study_runs_to_completion_on_the_embedded_default(embedded_ray, storage_url):
    spec = smoke_spec()
    with RayExecutor() as executor:
        assert executor.slots == trial_slots(1, 0) == int(ray.cluster_resources()["CPU"])
        assert StudyRunner(spec, "embedded", storage_url, executor).run() == "completed"
    for lane in assert_all_accounted_for(spec, "embedded", storage_url):
        assert set(lane.outcomes) <= RESULTS
        for trial in lane.finished:
            (run,) = trial.user_attrs["runs"]
            assert run["diagnostics"]["worker"]["torch_threads"] == 1


def test_torch_threads_follow_the_cpus_a_trial_declares(embedded_ray, storage_url):
    connect()
    cpus = int(ray.cluster_resources()["CPU"])
    spec = smoke_spec(tokens_per_trial=16 * 64 * 3)
    request = TrialRequest.build(spec.model_config(32, 2, 1.0, 1.0), spec.train_config(seed=0), None)
    with RayExecutor(num_cpus_per_trial=cpus, max_concurrency=5) as executor:
        assert executor.slots == 1 and executor.capacity == 2
        handle = executor.submit(request, on_progress=lambda step, loss: None)
        event = drain(executor, handle)
    assert isinstance(event, Finished)
    assert event.result.diagnostics["worker"]["torch_threads"] == cpus


def test_an_exception_in_training_is_a_failure_not_an_infrastructure_problem(
    embedded_ray, storage_url, tmp_path
):
    spec = smoke_spec()
    request = TrialRequest.build(
        spec.model_config(32, 2, 1.0, 1.0), spec.train_config(seed=0), str(tmp_path / "no-such-corpus.txt")
    )
    with RayExecutor() as executor:
        handle = executor.submit(request, on_progress=lambda step, loss: None)
        event = drain(executor, handle)
    assert isinstance(event, Failed) and not event.infrastructure
    assert "no-such-corpus" in event.error


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"queue_ahead": -1}, "queue_ahead"),
        ({"num_cpus_per_trial": 0}, "num_cpus_per_trial"),
        ({"num_gpus_per_trial": -1}, "num_gpus_per_trial"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_impossible_resources_are_refused_by_name(kwargs, field):
    with pytest.raises(ConfigError) as raised:
        RayExecutor(**kwargs)
    assert raised.value.field == field
