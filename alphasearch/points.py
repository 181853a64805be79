"""Where a lane's next alpha point comes from: the same points whether or not the study was interrupted.

A study's answer must not depend on when its driver was stopped or killed, so no point may depend on a
sampler's in-memory state (a GridSampler's shuffled order, a seeded RNG's position), which a restarted
driver does not have. Every point is instead a function of the spec and the lane's stored trials:

- grid: the k x k log-spaced points of the spec, in one fixed order per lane (a permutation seeded by
  `sampler_seed` and the lane, so a partial grid is spread over the plane). The next point is the first
  one no trial of the lane has *taken* (finished for good, running or queued), so a resumed lane runs
  exactly the points that never ran and never a finished one again, cached or not.
- random / tpe / gp: decision number i of a lane (i = how many distinct points the lane has already
  decided) is made by a sampler seeded with (`sampler_seed`, lane, i), never by how many trials the
  database happens to hold. Given the same finished trials it proposes the same point; the driver feeds
  it the same finished trials by re-running an interrupted point (an *orphan*) before deciding a new one.

    >>> from alphasearch.spec import StudySpec
    >>> spec = StudySpec.from_dict({"preset": "smoke", "sampler": "grid", "trials_per_width": 4})
    >>> [sorted(p) for p in grid_points(spec, lane_index=0)][0]
    ['alpha_attn', 'alpha_ffn']
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import optuna

from alphasearch.spec import StudySpec

PARAMS = ("alpha_attn", "alpha_ffn")
REPLICATE_OF = "replicate_of"  # user attr of a replicate trial (re-runs of the best point, not search points)

STALE_LIMIT = 4  # = 1 + max_retry of the storage's RetryHeartbeatStaleTrialCallback (search.make_storage)

Point = dict[str, float]


def log_grid(lo: float, hi: float, k: int) -> list[float]:
    """k log-spaced values from lo to hi. The same floats as calibration's grid (alphasearch.calibrate) and
    as earlier versions' GridSampler, so their runs share the result cache and old studies resume."""
    return [float(lo * (hi / lo) ** (i / (k - 1))) for i in range(k)] if k > 1 else [math.sqrt(lo * hi)]


# (alpha_attn range, alpha_ffn range), or with a third element the pass's levels per axis (a refinement
# pass: 3 x 3 around the optimum, StudySpec.refine); without it the spec's k = sqrt(trials_per_width).
Box = tuple  # tuple[tuple[float, float], tuple[float, float]] | tuple[..., ..., int]
REFINE_LEVELS = 3


def grid_points(spec: StudySpec, lane_index: int, box: Box | None = None) -> list[Point]:
    """The lane's k x k grid (k = sqrt(trials_per_width), or the box's own levels) over `box` (default: the
    spec's) in the fixed order the lane runs it."""
    k = box[2] if box is not None and len(box) > 2 else math.isqrt(spec.trials_per_width)
    attn_range, ffn_range = (box[0], box[1]) if box is not None else (spec.alpha_attn_range, spec.alpha_ffn_range)
    attn, ffn = log_grid(*attn_range, k), log_grid(*ffn_range, k)
    cells = [{"alpha_attn": a, "alpha_ffn": f} for a in attn for f in ffn]
    order = np.random.default_rng(_entropy(spec, lane_index)).permutation(len(cells))
    return [cells[int(i)] for i in order]


def decision_seed(spec: StudySpec, lane_index: int, decision: int) -> int:
    """The seed of a lane's decision number `decision`: the same in an interrupted and an uninterrupted run."""
    return int(np.random.SeedSequence(_entropy(spec, lane_index, decision)).generate_state(1)[0])


def _entropy(spec: StudySpec, *more: int) -> list[int]:
    return [spec.sampler_seed & (2**64 - 1), *more]  # numpy seeds are non-negative


class PointSampler(optuna.samplers.BaseSampler):
    """Hands out one given point (a grid cell, or an orphan to re-run) through `study.ask`."""

    def __init__(self, point: Point) -> None:
        self.point = point

    def infer_relative_search_space(self, study, trial):  # type: ignore[no-untyped-def]
        return {}

    def sample_relative(self, study, trial, search_space):  # type: ignore[no-untyped-def]
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):  # type: ignore[no-untyped-def]
        return self.point[param_name]


def point_of(trial: optuna.trial.FrozenTrial) -> tuple[float, float] | None:
    """The trial's alpha point, or None while it has none (a replicate, or a trial asked but not sampled)."""
    if REPLICATE_OF in trial.user_attrs or not all(p in trial.params for p in PARAMS):
        return None
    return (float(trial.params["alpha_attn"]), float(trial.params["alpha_ffn"]))


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-9) for x, y in zip(a, b, strict=True))


def _contains(points: Iterable[tuple[float, float]], p: tuple[float, float]) -> bool:
    return any(_same(p, q) for q in points)


def stale(trial: optuna.trial.FrozenTrial) -> bool:
    """Failed because its driver died (no heartbeat): "stale", or no outcome at all (rows failed by
    Optuna's own fail_stale_trials, which records none)."""
    return trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs.get("outcome") in (None, "stale")


def given_up(trials: Iterable[optuna.trial.FrozenTrial]) -> list[tuple[float, float]]:
    """Points whose trial went stale STALE_LIMIT times: each time its driver died (a point that kills the
    driver, e.g. out of memory). They count as finished for good instead of being run forever."""
    counts: list[tuple[tuple[float, float], int]] = []
    for t in trials:
        p = point_of(t)
        if p is None or not stale(t):
            continue
        for i, (q, n) in enumerate(counts):
            if _same(p, q):
                counts[i] = (q, n + 1)
                break
        else:
            counts.append((p, 1))
    return [p for p, n in counts if n >= STALE_LIMIT]


def taken(trials: Iterable[optuna.trial.FrozenTrial]) -> list[tuple[float, float]]:
    """Points of search trials finished for good (complete, pruned, crashed for good, given up), running
    or queued."""
    states = optuna.trial.TrialState
    trials = list(trials)
    out = given_up(trials)
    for t in trials:
        p = point_of(t)
        final_fail = t.state == states.FAIL and bool(t.user_attrs.get("final"))
        if p is not None and (
            t.state in (states.COMPLETE, states.PRUNED, states.RUNNING, states.WAITING) or final_fail
        ):
            out.append(p)
    return out


def orphans(trials: list[optuna.trial.FrozenTrial]) -> list[Point]:
    """Points decided but not taken: their trial was interrupted, cancelled or went stale and nothing
    re-queued it (a driver that died between failing a trial and re-queueing it). Oldest first."""
    have = taken(trials)
    out: list[Point] = []
    for t in sorted(trials, key=lambda t: t.number):
        p = point_of(t)
        if (
            p is not None
            and not _contains(have, p)
            and not _contains([(q["alpha_attn"], q["alpha_ffn"]) for q in out], p)
        ):
            out.append({"alpha_attn": p[0], "alpha_ffn": p[1]})
    return out


def decided(trials: Iterable[optuna.trial.FrozenTrial]) -> int:
    """How many distinct points the lane has decided so far (its next decision's number)."""
    seen: list[tuple[float, float]] = []
    for t in trials:
        p = point_of(t)
        if p is not None and not _contains(seen, p):
            seen.append(p)
    return len(seen)


def next_grid_point(
    spec: StudySpec, lane_index: int, trials: list[optuna.trial.FrozenTrial], boxes: list[Box] | None = None
) -> Point | None:
    """The first point of the lane's grid passes (one per box, in order) that no trial has taken; None once
    every point is taken."""
    have = taken(trials)
    for box in boxes or [None]:  # type: ignore[list-item]
        for point in grid_points(spec, lane_index, box):
            if not _contains(have, (point["alpha_attn"], point["alpha_ffn"])):
                return point
    return None


def sampler_for(spec: StudySpec, lane_index: int, decision: int) -> optuna.samplers.BaseSampler:
    """The adaptive sampler that makes the lane's decision number `decision`."""
    seed = decision_seed(spec, lane_index, decision)
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, n_startup_trials=max(4, spec.trials_per_width // 4)
        )
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=max(4, spec.trials_per_width // 5))
    return optuna.samplers.RandomSampler(seed=seed)
