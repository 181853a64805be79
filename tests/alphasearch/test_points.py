"""alphasearch.points: where a lane's next point comes from, from the spec and the stored trials alone."""

from __future__ import annotations

import optuna
import pytest

from alphasearch import points
from alphasearch.spec import StudySpec

S = optuna.trial.TrialState
DIST = optuna.distributions.FloatDistribution(0.01, 10.0, log=True)


def spec(**overrides) -> StudySpec:
    return StudySpec.from_dict({"preset": "smoke", "target_width": 1024, "target_depth": 8, "sampler": "grid",
                                "trials_per_width": 9, **overrides})  # fmt: skip


def trial(point: dict | None, state=S.COMPLETE, **attrs) -> optuna.trial.FrozenTrial:
    params = point or {}
    return optuna.trial.create_trial(
        state=state, value=1.0 if state == S.COMPLETE else None, params=params,
        distributions={k: DIST for k in params}, user_attrs=attrs,
    )  # fmt: skip


def test_the_grid_is_every_cell_once_in_an_order_fixed_by_the_spec_and_lane():
    s = spec()
    grid = points.grid_points(s, 0)
    assert len(grid) == 9 and len({(p["alpha_attn"], p["alpha_ffn"]) for p in grid}) == 9
    assert points.grid_points(s, 0) == grid  # the same on every call, in every process
    assert sorted(map(str, points.grid_points(s, 1))) == sorted(map(str, grid))  # same cells, ...
    assert points.grid_points(spec(sampler_seed=1), 0) != grid  # ... the order follows the seed and lane
    lo, hi = s.alpha_attn_range
    assert {p["alpha_attn"] for p in grid} >= {lo} and max(p["alpha_attn"] for p in grid) == pytest.approx(hi)


def test_the_next_cell_is_the_first_no_trial_holds_whatever_the_trial_numbers():
    s = spec()
    grid = points.grid_points(s, 0)
    assert points.next_grid_point(s, 0, []) == grid[0]
    held = [trial(grid[0]), trial(grid[1], S.RUNNING), trial(grid[2], S.WAITING), trial(grid[3], S.PRUNED),
            trial(grid[4], S.FAIL, outcome="failed", final=True)]  # fmt: skip
    assert points.next_grid_point(s, 0, held) == grid[5]
    # interrupted / cancelled / stale points are not held: they run again (first, as orphans)
    loose = [trial(grid[0], S.FAIL, outcome="interrupted"), trial(grid[1], S.FAIL, outcome="cancelled")]
    assert points.next_grid_point(s, 0, loose) == grid[0]
    assert points.orphans(loose) == [grid[0], grid[1]]
    assert points.orphans([*loose, trial(grid[0], S.WAITING)]) == [grid[1]]  # re-queued: not an orphan
    assert points.next_grid_point(s, 0, [trial(p) for p in grid]) is None


def test_decisions_count_distinct_points_not_trials():
    p, q = {"alpha_attn": 0.1, "alpha_ffn": 0.2}, {"alpha_attn": 0.3, "alpha_ffn": 0.2}
    assert points.decided([]) == 0
    trials = [trial(p, S.FAIL, outcome="interrupted"), trial(p), trial(q, S.RUNNING), trial(None, S.RUNNING),
              trial(q, replicate_of=1)]  # fmt: skip
    assert points.decided(trials) == 2  # p twice (an interrupted run and its re-run), q; no point, a replicate
    s = spec(sampler="tpe", trials_per_width=8)
    assert points.decision_seed(s, 0, 2) == points.decision_seed(s, 0, 2) != points.decision_seed(s, 0, 3)
    assert points.decision_seed(s, 0, 2) != points.decision_seed(s, 1, 2)


def test_a_point_stale_four_times_is_given_up_and_counts_as_taken():
    p = {"alpha_attn": 0.1, "alpha_ffn": 0.2}
    stale = [trial(p, S.FAIL) for _ in range(points.STALE_LIMIT - 1)]  # failed by Optuna: no outcome
    assert points.given_up(stale) == [] and points.orphans(stale) == [p]
    stale.append(trial(p, S.FAIL, outcome="stale"))
    assert points.given_up(stale) == [(0.1, 0.2)] and points.orphans(stale) == []
    assert points.given_up([trial(p, S.FAIL, outcome="interrupted") for _ in range(6)]) == []  # not its fault


def test_the_point_sampler_hands_out_its_point_through_ask(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    p = {"alpha_attn": 0.25, "alpha_ffn": 4.0}
    study.sampler = points.PointSampler(p)
    t = study.ask({"alpha_attn": DIST, "alpha_ffn": DIST})
    assert t.params == p
