"""The study driver end to end on the real trainer, in process: Optuna studies, cache, resume, divergence."""

from __future__ import annotations

import math
import sqlite3
import time
from datetime import datetime, timedelta

import optuna
import pytest

from alphasearch.cache import ResultCache
from alphasearch.errors import ConfigError
from alphasearch.executor import Failed, Finished, InProcessExecutor
from alphasearch.report import build_report
from alphasearch.search import StudyRunner, make_storage, optuna_study_name
from alphasearch.spec import StudySpec

COMPLETE, RUNNING, FAIL = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING,
                           optuna.trial.TrialState.FAIL)  # fmt: skip

# Smaller than the smoke preset: each run is ~10 steps of a 32-wide, 1-block model.
TINY = {
    "preset": "smoke",
    "target_width": 1024,
    "target_depth": 8,
    "proxy_widths": [32, 64],
    "proxy_depths": [1],
    "trials_per_width": 4,
    "tokens_per_trial": 8 * 32 * 10,
    "batch_size": 8,
    "seq_len": 32,
    "eval_interval": 5,
    "warmup_steps": 2,
}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHASEARCH_DATA_DIR", str(tmp_path))
    return {"url": f"sqlite:///{tmp_path / 'db.sqlite'}", "cache": ResultCache(tmp_path / "cache")}


def _trials(url: str, study_id: str, width: int, depth: int = 1, baseline: bool = False):
    study = optuna.load_study(study_name=optuna_study_name(study_id, width, depth, baseline=baseline), storage=url)
    return study.get_trials(deepcopy=False)


def test_a_study_runs_every_lane_to_its_budget_in_optuna_studies_a_user_can_load(env):
    spec = StudySpec.from_dict({**TINY, "rmsnorm_baseline": True})
    progress = []
    status = StudyRunner(spec, "s1", env["url"], InProcessExecutor(), cache=env["cache"], on_progress=progress.append).run()
    assert status == "completed"
    for width in (32, 64):
        trials = _trials(env["url"], "s1", width)
        assert len(trials) == 4
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        assert all(t.user_attrs["outcome"] == "completed" for t in trials)
        for t in trials:
            lo, hi = spec.alpha_attn_range
            assert lo <= t.params["alpha_attn"] <= hi
            run = t.user_attrs["runs"][0]
            assert run["val_curve"] and run["n_params"] > 0 and len(run["alphas"]["attn"]) == 1
            assert t.value == pytest.approx(run["final_val_loss"])
        [base] = _trials(env["url"], "s1", width, baseline=True)
        assert base.user_attrs["outcome"] == "completed" and len(base.user_attrs["seed_losses"]) == 2
    final = {row.label: (row.done, row.total) for row in progress[-1]}
    assert final["w32 d1"] == (4, 4) and final["w64 d1 rmsnorm"] == (1, 1)


def test_identical_runs_come_from_the_cache_across_studies(env):
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32], "sampler": "grid"})
    StudyRunner(spec, "first", env["url"], InProcessExecutor(), cache=env["cache"]).run()

    class CountingExecutor(InProcessExecutor):
        submitted = 0

        def submit(self, request, on_progress):
            CountingExecutor.submitted += 1
            return super().submit(request, on_progress)

    StudyRunner(spec, "second", env["url"], CountingExecutor(), cache=env["cache"]).run()
    assert CountingExecutor.submitted == 0  # same grid, same seeds, same code: every run was cached
    first = sorted(t.value for t in _trials(env["url"], "first", 32))
    second = sorted(t.value for t in _trials(env["url"], "second", 32))
    assert first == second


def test_rerunning_a_cancelled_study_resumes_it_without_duplicates(env):
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32]})

    def cancel_once_a_trial_finished() -> bool:
        try:
            return any(t.state == optuna.trial.TrialState.COMPLETE for t in _trials(env["url"], "r", 32))
        except KeyError:
            return False

    runner = StudyRunner(spec, "r", env["url"], InProcessExecutor(), should_cancel=cancel_once_a_trial_finished)
    assert runner.run() == "cancelled"
    done_before = [t for t in _trials(env["url"], "r", 32) if t.state == optuna.trial.TrialState.COMPLETE]
    assert 0 < len(done_before) < 4
    assert StudyRunner(spec, "r", env["url"], InProcessExecutor()).run() == "completed"
    trials = _trials(env["url"], "r", 32)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4  # exactly the budget: nothing lost, nothing twice
    assert {t.number for t in done_before} <= {t.number for t in complete}


def test_cancelling_stops_an_in_process_trial_mid_run(env):
    # 2000 steps: far longer than the 2 s after which the runner asks should_cancel again mid-trial.
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32], "tokens_per_trial": 8 * 32 * 2000, "eval_interval": 2})
    started = []

    def cancel_after_a_moment() -> bool:
        started.append(None)
        return len(started) > 1  # the loop's first check says no; the next one, mid-trial, says yes

    runner = StudyRunner(spec, "c", env["url"], InProcessExecutor(), should_cancel=cancel_after_a_moment)
    assert runner.run() == "cancelled"
    [trial] = _trials(env["url"], "c", 32)
    assert trial.user_attrs["outcome"] == "cancelled"
    assert trial.user_attrs["runs"][0]["steps_done"] < 2000  # stopped mid-run, not after it


def test_diverged_trials_are_results_with_their_step_never_retried(env):
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32], "lr": 50.0, "warmup_steps": 0})
    StudyRunner(spec, "div", env["url"], InProcessExecutor()).run()
    trials = _trials(env["url"], "div", 32)
    assert len(trials) == 4  # not retried: exactly the budget
    for t in trials:
        assert t.user_attrs["outcome"] == "diverged"
        assert t.user_attrs["diverged_at_step"] >= 1
        assert t.state == optuna.trial.TrialState.COMPLETE and t.value == pytest.approx(math.log(256))


def test_first_seed_shifts_the_training_seeds_so_a_study_can_be_repeated(env):
    base = {**TINY, "proxy_widths": [32], "trials_per_width": 1, "seeds": 2}
    StudyRunner(StudySpec.from_dict(base), "a", env["url"], InProcessExecutor()).run()
    StudyRunner(StudySpec.from_dict({**base, "first_seed": 7}), "b", env["url"], InProcessExecutor()).run()
    [a], [b] = _trials(env["url"], "a", 32), _trials(env["url"], "b", 32)
    assert a.user_attrs["seeds"] == [0, 1] and b.user_attrs["seeds"] == [7, 8]


class CountingExecutor(InProcessExecutor):
    """The real in-process executor, counting the training runs it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.submitted = 0

    def submit(self, request, on_progress):
        self.submitted += 1
        return super().submit(request, on_progress)


def test_the_best_point_is_replicated_in_the_same_optuna_study_and_a_rerun_resumes_it(env):
    # grid (as the quick preset): 2 x 2 points, then the best one re-run with seeds 1 and 2.
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32], "sampler": "grid", "replicate_best": 3})
    assert spec.total_trials == 4 + 2

    def a_replicate_finished() -> bool:
        try:
            return any(t.state == COMPLETE and "replicate_of" in t.user_attrs for t in _trials(env["url"], "rep", 32))
        except KeyError:
            return False

    first = CountingExecutor()
    assert StudyRunner(spec, "rep", env["url"], first, should_cancel=a_replicate_finished).run() == "cancelled"
    assert first.submitted == 5  # the 4 grid points and one replicate, then the cancel
    progress = []
    second = CountingExecutor()
    assert StudyRunner(spec, "rep", env["url"], second, on_progress=progress.append).run() == "completed"
    assert second.submitted == 1  # only the replicate still missing: nothing finished is trained again
    assert (progress[-1][0].done, progress[-1][0].total) == (6, 6)

    trials = _trials(env["url"], "rep", 32)
    assert len(trials) == 6 and all(t.state == COMPLETE and t.user_attrs["outcome"] == "completed" for t in trials)
    search = [t for t in trials if "replicate_of" not in t.user_attrs]
    replicates = [t for t in trials if "replicate_of" in t.user_attrs]
    best = min(search, key=lambda t: t.value)
    assert len(search) == 4 and all(t.user_attrs["seeds"] == [0] for t in search)
    assert sorted(t.user_attrs["replicate_seed"] for t in replicates) == [1, 2]
    for t in replicates:
        assert t.user_attrs["replicate_of"] == best.number and t.params == best.params
        assert t.user_attrs["seeds"] == [t.user_attrs["replicate_seed"]]
        assert t.value == pytest.approx(t.user_attrs["seed_losses"][0])
    assert len({t.value for t in replicates} | {best.value}) == 3  # other seeds, other losses

    third = CountingExecutor()
    assert StudyRunner(spec, "rep", env["url"], third).run() == "completed"
    assert third.submitted == 0 and len(_trials(env["url"], "rep", 32)) == 6

    # The analysis reads the replicates as more seeds of the best point: seed noise is measured.
    [row] = build_report(spec, "rep", env["url"]).to_dict()["per_width"]
    assert row["n_replicated"] == 1 and row["seed_std"] > 0 and row["snr"] is not None


def test_replicates_come_from_the_result_cache_like_any_run(env):
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32], "sampler": "grid", "replicate_best": 2})
    StudyRunner(spec, "c1", env["url"], InProcessExecutor(), cache=env["cache"]).run()
    again = CountingExecutor()
    assert StudyRunner(spec, "c2", env["url"], again, cache=env["cache"]).run() == "completed"
    assert again.submitted == 0
    replicas = [[t for t in _trials(env["url"], sid, 32) if "replicate_of" in t.user_attrs] for sid in ("c1", "c2")]
    assert [len(r) for r in replicas] == [1, 1] and replicas[0][0].value == replicas[1][0].value


def test_nothing_is_replicated_when_the_points_already_have_enough_seeds(env):
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32], "trials_per_width": 2, "seeds": 2, "replicate_best": 2})
    assert spec.total_trials == 2
    StudyRunner(spec, "enough", env["url"], InProcessExecutor()).run()
    trials = _trials(env["url"], "enough", 32)
    assert len(trials) == 2 and not [t for t in trials if "replicate_of" in t.user_attrs]


def _backdate(url: str, trial_id: int, seconds: float) -> None:
    """Move a trial's start into the past in the SQLite file, as if its driver had died back then."""
    start = (datetime.now() - timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("UPDATE trials SET datetime_start = ? WHERE trial_id = ?", (start, trial_id)).rowcount == 1


def test_a_trial_left_running_without_a_heartbeat_is_failed_and_rerun_on_resume(env):
    """Issue 3: a driver that died between study.ask() and its first heartbeat left a RUNNING trial that
    Optuna's fail_stale_trials never sees; the resumed study used to wait for it forever."""
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32], "trials_per_width": 2})
    study = optuna.create_study(
        study_name=optuna_study_name("hb", 32, 1), storage=make_storage(env["url"]), direction="minimize"
    )
    space = {
        "alpha_attn": optuna.distributions.FloatDistribution(*spec.alpha_attn_range, log=True),
        "alpha_ffn": optuna.distributions.FloatDistribution(*spec.alpha_ffn_range, log=True),
    }
    dead = study.ask(space)  # ... and the driver died here: no heartbeat, ever
    alive = study.ask(space)  # another driver's trial: old, but it heartbeats
    make_storage(env["url"]).record_heartbeat(alive._trial_id)
    _backdate(env["url"], alive._trial_id, 120)

    # Just asked: it may be a live driver between ask() and its first heartbeat, so it is left alone.
    fresh = StudyRunner(spec, "hb", env["url"], InProcessExecutor())
    fresh._state(fresh.lanes[0])  # what every pass of the driver's loop does first, per lane
    assert [t.state for t in _trials(env["url"], "hb", 32)] == [RUNNING, RUNNING]

    _backdate(env["url"], dead._trial_id, 120)
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in _trials(env["url"], "hb", 32)] == [RUNNING, RUNNING]  # Optuna alone: stuck
    runner = StudyRunner(spec, "hb", env["url"], InProcessExecutor())
    runner._state(runner.lanes[0])
    trials = _trials(env["url"], "hb", 32)
    assert trials[dead.number].state == FAIL  # silent and old: reaped
    assert trials[alive.number].state == RUNNING  # old but heartbeating: a live driver's, untouched
    study.tell(alive, state=FAIL)  # (that driver stops, so this test need not wait out its grace period)

    deadline = time.monotonic() + 120  # the bug made run() wait forever: give up (-> "cancelled") instead
    status = StudyRunner(spec, "hb", env["url"], InProcessExecutor(), should_cancel=lambda: time.monotonic() > deadline).run()
    assert status == "completed"
    complete = [t for t in _trials(env["url"], "hb", 32) if t.state == COMPLETE]
    assert len(complete) == 2
    [retry] = [t for t in complete if t.system_attrs.get("failed_trial") == dead.number]
    assert retry.params == dead.params  # re-queued by RetryHeartbeatStaleTrialCallback, like a stale trial


# -- crash consistency (issue 17): a study's points do not depend on interruptions ------------------------


class _DriverDied(BaseException):
    """The driver process dying (kill -9) mid-poll: nothing of the runner's clean-up runs."""


class StoppingExecutor(CountingExecutor):
    """The real in-process executor whose `poll` number `stop_at` (a run in flight, not yet trained) is
    interrupted as by SIGTERM / Ctrl-C (KeyboardInterrupt) or by the driver dying (_DriverDied)."""

    def __init__(self, stop_at: int, how: type[BaseException]) -> None:
        super().__init__()
        self.stop_at, self.how, self.polls = stop_at, how, 0

    def poll(self, timeout):
        self.polls += 1
        if self.polls == self.stop_at:
            raise self.how
        return super().poll(timeout)


def _points(url: str, study_id: str, width: int) -> dict[tuple[float, float], float]:
    """Each finished search point of a lane and its value; asserts no point finished twice."""
    done = [t for t in _trials(url, study_id, width) if t.state == COMPLETE and "replicate_of" not in t.user_attrs]
    points = {(t.params["alpha_attn"], t.params["alpha_ffn"]): t.value for t in done}
    assert len(points) == len(done), f"a point finished twice in {study_id}: {sorted(points)}"
    return points


@pytest.mark.parametrize("sampler", ["grid", "random", "tpe"])
def test_an_interrupted_and_resumed_study_runs_the_same_points_as_an_uninterrupted_one(env, monkeypatch, sampler):
    """Issue 17: resuming re-seeded the sampler with the trial count, so a resumed grid ran some points twice
    and others never, and a resumed random/TPE lane drew other points. Stopped twice, by a graceful
    interrupt and by the driver dying mid-trial, the study must end with the same points and values, and
    nothing finished is trained again (no result cache here)."""
    import alphasearch.search as search

    monkeypatch.setattr(search, "HEARTBEAT_INTERVAL_S", 1)
    monkeypatch.setattr(search, "GRACE_PERIOD_S", 3)  # the dead driver's trial is re-queued after 3 s
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32], "sampler": sampler, "trials_per_width": 9 if sampler == "grid" else 6})
    reference = CountingExecutor()
    assert StudyRunner(spec, "ref", env["url"], reference).run() == "completed"
    expected = _points(env["url"], "ref", 32)
    assert len(expected) == spec.trials_per_width

    first = StoppingExecutor(stop_at=3, how=KeyboardInterrupt)  # 2 trials done, the 3rd in flight
    with pytest.raises(KeyboardInterrupt):
        StudyRunner(spec, "cut", env["url"], first).run()
    second = StoppingExecutor(stop_at=3, how=_DriverDied)  # the 3rd again, the 4th, then dies on the 5th
    with pytest.raises(_DriverDied):
        StudyRunner(spec, "cut", env["url"], second).run()
    assert [t.state for t in _trials(env["url"], "cut", 32)].count(RUNNING) == 1  # left by the dead driver
    last = CountingExecutor()
    assert StudyRunner(spec, "cut", env["url"], last).run() == "completed"

    assert _points(env["url"], "cut", 32) == expected  # same points, same losses
    trials = _trials(env["url"], "cut", 32)
    assert not [t for t in trials if t.state in (RUNNING, optuna.trial.TrialState.WAITING)]
    # Each trial that ended without a result says why, and its re-run does not inherit that verdict.
    interrupted, stale = (t for t in trials if t.state == FAIL)
    assert interrupted.user_attrs["outcome"] == "interrupted"
    assert interrupted.user_attrs["errors"][-1].startswith("interrupted: the driver was stopped")
    assert stale.user_attrs["outcome"] == "stale" and stale.user_attrs["errors"][0].startswith("stale lease")
    reruns = {t.number: t for t in trials if t.state == COMPLETE}
    [rerun_of_interrupted] = [t for t in reruns.values() if t.user_attrs.get("rerun_of") == interrupted.number]
    [rerun_of_stale] = [t for t in reruns.values() if t.system_attrs.get("failed_trial") == stale.number]
    for rerun, origin in ((rerun_of_interrupted, interrupted), (rerun_of_stale, stale)):
        assert rerun.params == origin.params
        assert rerun.user_attrs["outcome"] == "completed" and "errors" not in rerun.user_attrs
    # Each point trained once, plus one run per interruption (the run in flight, lost each time).
    assert first.submitted + second.submitted + last.submitted == spec.trials_per_width + 2


class WorkerDiesOnceExecutor(CountingExecutor):
    """The first run trains (reporting its val losses), then its "worker dies": Failed(infrastructure=True)."""

    def poll(self, timeout):
        events = super().poll(timeout)
        if self.submitted == 1 and events and isinstance(events[0], Finished):
            return [Failed(events[0].handle, "RayActorError: the worker died", infrastructure=True)]
        return events


def test_a_run_retried_after_a_worker_crash_says_so_and_reports_each_step_once(env, recwarn):
    """Issue 17: the retried run reported its steps to the same Optuna trial again (26 warnings "The reported
    value is ignored because this step=... is already reported"); the retry left no reason either."""
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32], "trials_per_width": 1, "pruner": "median"})
    executor = WorkerDiesOnceExecutor()
    assert StudyRunner(spec, "crash", env["url"], executor).run() == "completed"
    [trial] = _trials(env["url"], "crash", 32)
    assert executor.submitted == 2 and trial.user_attrs["outcome"] == "completed"
    assert trial.user_attrs["errors"] == ["worker crash, run again (retry 1): RayActorError: the worker died"]
    assert sorted(trial.intermediate_values) == [5, 10]  # TINY evaluates every 5 of its 10 steps
    assert not [w for w in recwarn if "already reported" in str(w.message)]


def test_an_optimum_on_the_edge_extends_the_box_with_a_recentred_grid_pass(env):
    """A 2 x 2 grid's best point is always a corner, so on the edge: with extend_box 1 the lane runs one more
    2 x 2 pass over a box centred on it (same log width per axis), records both boxes with its Optuna study,
    and the report analyses that width over their union."""
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32], "sampler": "grid", "extend_box": 1})
    assert StudyRunner(spec, "ext", env["url"], InProcessExecutor(), cache=env["cache"]).run() == "completed"
    study = optuna.load_study(study_name=optuna_study_name("ext", 32, 1), storage=env["url"])
    trials = study.get_trials(deepcopy=False)
    first, second = (tuple(map(tuple, b)) for b in study.user_attrs["boxes"])
    assert first == (spec.alpha_attn_range, spec.alpha_ffn_range) and len(trials) == 8
    firsts = [t for t in trials if t.number < 4]
    best = min((t for t in firsts if t.user_attrs["outcome"] == "completed"), key=lambda t: t.value)
    for i, param in enumerate(("alpha_attn", "alpha_ffn")):
        lo, hi = second[i]
        original = (spec.alpha_attn_range, spec.alpha_ffn_range)[i]
        assert math.isclose(hi / lo, original[1] / original[0], rel_tol=1e-6) or lo == original[0] / 100
        assert lo >= original[0] / 100 and hi <= original[1] * 100  # never beyond two decades
        assert math.isclose(math.sqrt(lo * hi), best.params[param], rel_tol=1e-6) or lo == original[0] / 100
        assert all(lo * (1 - 1e-9) <= t.params[param] <= hi * (1 + 1e-9) for t in trials if t.number >= 4)
    outside = [t for t in trials if not spec.alpha_attn_range[0] <= t.params["alpha_attn"] <= spec.alpha_attn_range[1]]
    assert outside, "the second pass ran points outside the original box"
    report = build_report(spec, "ext", env["url"])
    grid = report.heatmaps["w32-d1"]
    assert grid.space.attn == (min(first[0][0], second[0][0]), max(first[0][1], second[0][1]))
    # Resuming the finished study runs nothing more and keeps the boxes.
    assert StudyRunner(spec, "ext", env["url"], InProcessExecutor(), cache=env["cache"]).run() == "completed"
    assert len(study.get_trials(deepcopy=False)) == 8


def test_a_refinement_pass_runs_a_3x3_grid_at_half_the_spacing_around_the_optimum(env):
    """refine 1: after the 2 x 2 grid the lane runs a 3 x 3 pass centred on its optimum whose step is half
    the grid's (in log), records it with the boxes (levels 3), runs each of its points once, and the
    analysis sees the union. A resumed finished study runs nothing more."""
    spec = StudySpec.from_dict({**TINY, "proxy_widths": [32], "sampler": "grid", "extend_box": 0, "refine": 1})
    assert StudyRunner(spec, "zoom", env["url"], InProcessExecutor(), cache=env["cache"]).run() == "completed"
    study = optuna.load_study(study_name=optuna_study_name("zoom", 32, 1), storage=env["url"])
    trials = study.get_trials(deepcopy=False)
    first, zoom = study.user_attrs["boxes"]
    assert len(first) == 2 and zoom[2] == 3
    for i, original in enumerate((spec.alpha_attn_range, spec.alpha_ffn_range)):
        lo, hi = zoom[i]
        assert math.isclose(hi / lo, original[1] / original[0], rel_tol=1e-6)  # 2 half steps = 1 grid step
    ran = {(round(t.params["alpha_attn"], 9), round(t.params["alpha_ffn"], 9)) for t in trials}
    assert len(ran) == len(trials), "a point ran twice"
    centre = (math.sqrt(zoom[0][0] * zoom[0][1]), math.sqrt(zoom[1][0] * zoom[1][1]))
    ring = [(a, f) for a in (zoom[0][0], centre[0], zoom[0][1]) for f in (zoom[1][0], centre[1], zoom[1][1])]
    for a, f in ring:
        assert any(math.isclose(a, x, rel_tol=1e-6) and math.isclose(f, y, rel_tol=1e-6) for x, y in ran), (a, f)
    assert len(trials) in (12, 13)  # 4 + the 9 of the ring, less the centre when it is a grid point
    completed = [t for t in trials if t.number < 4 and t.user_attrs["outcome"] == "completed"]
    assert completed and all(t.user_attrs.get("outcome") for t in trials)
    assert StudyRunner(spec, "zoom", env["url"], InProcessExecutor(), cache=env["cache"]).run() == "completed"
    assert len(study.get_trials(deepcopy=False)) == len(trials)


def test_refine_is_validated_and_leaves_old_ids_alone():
    with pytest.raises(ConfigError) as e:
        StudySpec.from_dict({**TINY, "refine": -1})
    assert e.value.field == "refine"
    plain = StudySpec.from_dict(TINY)
    assert plain.refine == 0 and plain.fingerprint() == StudySpec.from_dict({**TINY, "refine": 0}).fingerprint()
    assert StudySpec.from_dict({**TINY, "refine": 1}).fingerprint() != plain.fingerprint()
