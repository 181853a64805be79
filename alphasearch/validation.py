"""Validation: measure a finished study's recommendation where it matters, at a width wider than every proxy.

One idea: train, at a width W larger than every proxy (default twice the widest proxy, or the target width
when the target is no wider than that), the pair the study recommends at W, the two defaults a user would
otherwise take, (1, 1) and (0.5, 0.5), and the x2 / ÷2 neighbourhood of the recommendation, each with the
same N seeds (paired: seed s of every point sees the same init and data order, so differences between
points carry common-random-number noise only). The result is each point's mean loss and seed std, the best
measured point, and the **regret** of the recommendation: its mean loss minus the best point's, in nats and
in units of the noise of that difference.

Why the axis neighbourhood (4 points: attn x2, attn ÷2, ffn x2, ffn ÷2) and not the 8 around it: it says
per coordinate whether moving that alpha helps, which is what a user acts on, for 7 points in all instead of
11; runs at W are the most expensive of the whole study, and the diagonals mostly measure the attn x ffn
interaction, which the proxies' surrogate already models.

Runs go through the same `Executor` interface (in-process or Ray) and `ResultCache` as studies, with the
study's own recipe at W: `spec.model_config(W, depth, ...)` (so width-matched init keeps the study's
reference width) and `spec.train_config(width=W)` (its lr rule evaluated at W), except that stall
detection is off: every validation run trains its full budget, so every point's loss is read at the same
step. Depth is the deepest proxy depth (only the width changes from the proxies).

    >>> plan = plan_validation(spec, recommended=(0.4, 0.2), width=128, seeds=2)  # doctest: +SKIP
    >>> runs = run_validation(spec, plan, executor=InProcessExecutor(), cache=cache)  # doctest: +SKIP
    >>> summarise(plan, runs)["regret"]["recommended"]["nats"]  # doctest: +SKIP
    0.004
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alphasearch.cache import ResultCache, json_safe
from alphasearch.errors import AlphaSearchError, ConfigError
from alphasearch.executor import Executor, Failed, InProcessExecutor, TrialRequest
from alphasearch.spec import StudySpec

DEFAULT_SEEDS = 2
MAX_SEEDS = 16
MAX_WIDTH = 65_536
NEIGHBOUR_FACTOR = 2.0
RECOMMENDED = "recommended"
DEFAULTS = {"(1, 1)": (1.0, 1.0), "(0.5, 0.5)": (0.5, 0.5)}


class ValidationInterrupted(AlphaSearchError):
    """`should_stop` asked the validation to stop; its finished runs are in the cache for the next try."""


# -- what to train --------------------------------------------------------------------------------------


def default_width(spec: StudySpec) -> int:
    """Twice the widest proxy, or the target width when the target is no wider than that."""
    twice = 2 * max(spec.proxy_widths)
    return spec.target_width if spec.target_width <= twice else twice


def check_width(spec: StudySpec, width: Any) -> int:
    """`width` (None: the default) checked against the study, or ConfigError naming `width` and the fix."""
    if width is None:
        return default_width(spec)
    widest = max(spec.proxy_widths)
    if isinstance(width, bool) or not isinstance(width, int):
        raise ConfigError("width", f"got {width!r}; use an integer width, e.g. {default_width(spec)}")
    if width <= widest:
        raise ConfigError(
            "width",
            f"{width} is not larger than the widest proxy ({widest}); a validation measures the recommendation "
            f"beyond the proxies: use a width above {widest}, e.g. {default_width(spec)} (the default)",
        )
    if width > MAX_WIDTH:
        raise ConfigError("width", f"got {width:,}; use at most {MAX_WIDTH:,}")
    if width % spec.head_dim:
        raise ConfigError(
            "width", f"{width} is not a multiple of the study's head_dim {spec.head_dim}; use e.g. "
            f"{(width // spec.head_dim + 1) * spec.head_dim}",
        )  # fmt: skip
    return width


def check_seeds(seeds: Any) -> int:
    if seeds is None:
        return DEFAULT_SEEDS
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(
            "seeds", f"got {seeds!r}; use an integer from 1 to {MAX_SEEDS} (default {DEFAULT_SEEDS}; 1 cannot "
            "measure the noise of a difference at the validation width)",
        )  # fmt: skip
    return seeds


@dataclass(frozen=True)
class Point:
    """One alpha pair to train. `labels`: every role it plays (a default may coincide with the recommendation)."""

    alpha_attn: float
    alpha_ffn: float
    labels: tuple[str, ...]

    @property
    def label(self) -> str:
        return " = ".join(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {"alpha_attn": self.alpha_attn, "alpha_ffn": self.alpha_ffn, "labels": list(self.labels),
                "label": self.label}  # fmt: skip


@dataclass
class ValidationPlan:
    """What a validation trains: `points` x `seeds` runs at (width, depth)."""

    width: int
    depth: int
    seeds: list[int]
    points: list[Point]
    recommended: tuple[float, float]  # the study's recommendation evaluated at `width`
    target: tuple[float, float] | None = None  # the study's recommendation at its target (for reference)
    # The widest proxy's seed std: the noise of a regret when a single seed leaves none to measure at `width`.
    proxy_seed_std: float | None = None
    proxy_width: int | None = None

    @property
    def total_runs(self) -> int:
        return len(self.points) * len(self.seeds)

    def request(self, spec: StudySpec, point: Point, seed: int) -> TrialRequest:
        model = spec.model_config(self.width, self.depth, point.alpha_attn, point.alpha_ffn)
        train = dataclasses.replace(spec.train_config(seed=seed, width=self.width), detect_stalls=False)
        return TrialRequest.build(model, train, spec.corpus, f"validate w{self.width} {point.label} seed {seed}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width, "depth": self.depth, "seeds": list(self.seeds),
            "points": [p.to_dict() for p in self.points], "recommended": list(self.recommended),
            "target": list(self.target) if self.target else None, "proxy_seed_std": self.proxy_seed_std,
            "proxy_width": self.proxy_width,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationPlan:
        points = [Point(float(p["alpha_attn"]), float(p["alpha_ffn"]), tuple(p["labels"])) for p in data["points"]]
        target = data.get("target")
        return cls(int(data["width"]), int(data["depth"]), [int(s) for s in data["seeds"]], points,
                   (float(data["recommended"][0]), float(data["recommended"][1])),
                   (float(target[0]), float(target[1])) if target else None, data.get("proxy_seed_std"),
                   data.get("proxy_width"))  # fmt: skip


def neighbourhood(alpha_attn: float, alpha_ffn: float, factor: float = NEIGHBOUR_FACTOR) -> list[tuple[str, float, float]]:
    """The 4 axis neighbours (label, alpha_attn, alpha_ffn) of a pair, x `factor` and ÷ `factor`."""
    return [
        (f"attn x{factor:g}", alpha_attn * factor, alpha_ffn),
        (f"attn /{factor:g}", alpha_attn / factor, alpha_ffn),
        (f"ffn x{factor:g}", alpha_attn, alpha_ffn * factor),
        (f"ffn /{factor:g}", alpha_attn, alpha_ffn / factor),
    ]


def plan_validation(
    spec: StudySpec,
    recommended: tuple[float, float],
    *,
    width: int | None = None,
    seeds: int | None = None,
    target: tuple[float, float] | None = None,
    proxy_seed_std: float | None = None,
    proxy_width: int | None = None,
) -> ValidationPlan:
    """The points to train: the recommendation at `width`, (1, 1), (0.5, 0.5), and its 4 axis neighbours."""
    width, n_seeds = check_width(spec, width), check_seeds(seeds)
    for name, value in zip(("alpha_attn", "alpha_ffn"), recommended, strict=True):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(name, f"the recommended {name} is {value!r}; a validation needs a positive alpha pair")
    a, f = float(recommended[0]), float(recommended[1])
    wanted = [(RECOMMENDED, a, f), *((k, *v) for k, v in DEFAULTS.items()), *neighbourhood(a, f)]
    points: list[Point] = []
    for label, pa, pf in wanted:  # a pair listed twice (the recommendation may be a default) trains once
        same = next((i for i, p in enumerate(points) if _same(p.alpha_attn, pa) and _same(p.alpha_ffn, pf)), None)
        if same is None:
            points.append(Point(pa, pf, (label,)))
        else:
            points[same] = Point(points[same].alpha_attn, points[same].alpha_ffn, (*points[same].labels, label))
    seed_list = list(range(spec.first_seed, spec.first_seed + n_seeds))
    plan = ValidationPlan(width, max(spec.proxy_depths), seed_list, points, (a, f), target, proxy_seed_std,
                          proxy_width)  # fmt: skip
    plan.request(spec, points[0], seed_list[0])  # a config error (e.g. width vs heads) surfaces now, not in a worker
    return plan


def _same(x: float, y: float) -> bool:
    return abs(math.log(x / y)) < 1e-9


def plan_for_study(
    spec: StudySpec, study_id: str, storage_url: str, *, width: int | None = None, seeds: int | None = None
) -> ValidationPlan:
    """The plan for a finished study whose trials are in `storage_url`: its recommendation evaluated at
    (`width`, the depth the validation trains), plus the widest proxy's seed std for single-seed validations.

    The pair is `analysis.recommend` on the study's own per-width optima with that width as its target (the
    width trend, or the pooled optimum, read there); at the target width of a one-depth study it is the
    study's own recommendation. The spec itself is never re-targeted: its recipe (init reference width,
    the lr rule from target_lr) is the study's."""
    from alphasearch import analysis
    from alphasearch.report import build_report, lane_spaces

    width, seeds = check_width(spec, width), check_seeds(seeds)
    report = build_report(spec, study_id, storage_url)
    own = report.recommendation
    depth = max(spec.proxy_depths)
    rec = own
    if width != spec.target_width or depth != spec.target_depth and len(spec.proxy_depths) > 1:
        spaces = lane_spaces(spec, study_id, storage_url).values()  # as build_report: boxes extended on an edge
        space = analysis.SearchSpace(attn=(min(s.attn[0] for s in spaces), max(s.attn[1] for s in spaces)),
                                     ffn=(min(s.ffn[0] for s in spaces), max(s.ffn[1] for s in spaces)))  # fmt: skip
        rec = analysis.recommend(report.optima, target_width=width, target_depth=depth, norm=spec.norm, space=space,
                                 study_ids=(study_id,))  # fmt: skip
    widest = max(report.optima, key=lambda o: (o.width, o.depth), default=None)
    target = None if rec is own else (float(own.alpha_attn), float(own.alpha_ffn))
    return plan_validation(
        spec, (float(rec.alpha_attn), float(rec.alpha_ffn)), width=width, seeds=seeds, target=target,
        proxy_seed_std=widest.seed_std if widest else None, proxy_width=widest.width if widest else None,
    )  # fmt: skip


# -- training -------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One finished validation run: which point, which seed, how it ended."""

    point: int  # index into plan.points
    label: str
    alpha_attn: float
    alpha_ffn: float
    seed: int
    outcome: str  # completed | diverged | failed
    final_val_loss: float | None
    steps_done: int = 0
    wall_time_s: float = 0.0
    cached: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


OnRun = Callable[[int, int, "Run | None"], None]  # (done, total, the run that just finished)


def run_validation(
    spec: StudySpec,
    plan: ValidationPlan,
    *,
    executor: Executor | None = None,
    cache: ResultCache | None = None,
    on_progress: OnRun | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_retries: int = 2,
) -> list[Run]:
    """Train every (point, seed) of `plan` (served from `cache` when it can be). A crashed or diverged run
    is a result (its point gets no mean); ValidationInterrupted when `should_stop()` turns true."""
    stop = should_stop or (lambda: False)
    own = executor is None
    executor = executor or InProcessExecutor()
    total, runs = plan.total_runs, list[Run]()
    report = on_progress or (lambda done, total, run: None)
    pending: dict[int, tuple[int, int, TrialRequest, int]] = {}  # handle -> (point, seed, request, retries)
    stopping = False

    def verdict(step: int, val_loss: float) -> str | None:
        return "cancelled" if stop() else None

    def record(i: int, seed: int, result: Any, *, cached: bool = False, error: str | None = None) -> None:
        p = plan.points[i]
        if result is None:
            outcome, loss, steps, wall = "failed", None, 0, 0.0
        else:
            outcome = "diverged" if result.diverged else "completed"
            loss, steps, wall = result.final_val_loss, result.steps_done, result.wall_time_s
            if outcome == "completed" and (loss is None or not math.isfinite(loss)):
                outcome, loss = "failed", None
        run = Run(i, p.label, p.alpha_attn, p.alpha_ffn, seed, outcome, loss, steps, wall, cached, error)
        runs.append(run)
        report(len(runs), total, run)

    try:
        report(0, total, None)
        for i, point in enumerate(plan.points):
            for seed in plan.seeds:
                request = plan.request(spec, point, seed)
                hit = cache.get(request.key()) if cache is not None else None
                if hit is not None:
                    record(i, seed, hit, cached=True)
                else:
                    pending[executor.submit(request, verdict)] = (i, seed, request, 0)
        while pending:
            if not stopping and stop():
                stopping = True
                for handle in list(pending):
                    executor.stop(handle, "cancelled")
            for event in executor.poll(timeout=1.0):
                if event.handle not in pending:
                    continue
                i, seed, request, retries = pending.pop(event.handle)
                if isinstance(event, Failed):
                    if event.infrastructure and retries < max_retries and not stopping:
                        pending[executor.submit(request, verdict)] = (i, seed, request, retries + 1)  # worker died
                    elif not stopping:
                        record(i, seed, None, error=event.error.strip()[-1500:])
                    continue
                if event.result.stopped is not None:  # cancelled by `stop`
                    continue
                if cache is not None:
                    cache.put(request.key(), event.result)
                record(i, seed, event.result)
    finally:
        if own:
            executor.close()
    if stopping:
        raise ValidationInterrupted("validation stopped on request; finished runs are cached for the next try")
    return sorted(runs, key=lambda r: (r.point, r.seed))


# -- the result -----------------------------------------------------------------------------------------


def summarise(plan: ValidationPlan, runs: Sequence[Run]) -> dict[str, Any]:
    """Per point mean loss and seed std, the best measured point, and the regret of the recommendation and
    of (1, 1) and (0.5, 0.5) against it, in nats and in units of the noise of a paired difference.

    Noise of a regret (candidate c, best b): the std over seeds of the per-seed difference L(c, s) - L(b, s),
    divided by sqrt(N). With N = 1 there is no difference to take a std of at this width: the noise is the
    seed std measured at the widest proxy (`plan.proxy_seed_std`; its `noise_kind` says so), or None.
    A point whose runs did not all complete (diverged or crashed) has no mean; its regret is None.
    Note: the best measured point is the lowest of 7 noisy means, so regrets lean high by about the noise.
    """
    by_point: dict[int, dict[int, Run]] = {}
    for run in runs:
        by_point.setdefault(run.point, {})[run.seed] = run
    points = []
    for i, p in enumerate(plan.points):
        mine = by_point.get(i, {})
        losses = {s: r.final_val_loss for s, r in mine.items() if r.outcome == "completed" and r.final_val_loss is not None}
        complete = len(losses) == len(plan.seeds)
        vals = [losses[s] for s in plan.seeds if s in losses]
        outcomes = sorted({r.outcome for r in mine.values()})
        points.append({
            **p.to_dict(),
            "n": len(vals),
            "mean": statistics.fmean(vals) if complete and vals else None,
            "seed_std": statistics.stdev(vals) if complete and len(vals) > 1 else None,
            "losses": [losses.get(s) for s in plan.seeds],
            "outcome": "completed" if complete else ("/".join(o for o in outcomes if o != "completed") or "pending"),
        })  # fmt: skip
    measured = [i for i, pt in enumerate(points) if pt["mean"] is not None]
    best = min(measured, key=lambda i: points[i]["mean"]) if measured else None
    regret: dict[str, Any] = {}
    for role in (RECOMMENDED, *DEFAULTS):
        where = next((k for k, p in enumerate(plan.points) if role in p.labels), None)
        regret[role] = _regret(points, where, best, plan.seeds, plan.proxy_seed_std, plan.proxy_width)
    return json_safe({
        "width": plan.width, "depth": plan.depth, "seeds": list(plan.seeds), "recommended": list(plan.recommended),
        "target": list(plan.target) if plan.target else None, "points": points,
        "best": None if best is None else {"index": best, "label": points[best]["label"],
                                           "alpha_attn": points[best]["alpha_attn"],
                                           "alpha_ffn": points[best]["alpha_ffn"], "mean": points[best]["mean"]},
        "regret": regret, "runs_done": len(runs), "runs_total": plan.total_runs,
    })  # fmt: skip


def _regret(points: list[dict[str, Any]], i: int | None, best: int | None, seeds: list[int],
            proxy_seed_std: float | None, proxy_width: int | None) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"label": None if i is None else points[i]["label"], "nats": None, "noise": None,
                           "in_noise": None, "noise_kind": None, "is_best": i is not None and i == best}  # fmt: skip
    if i is None or best is None or points[i]["mean"] is None:
        return out
    out["nats"] = points[i]["mean"] - points[best]["mean"]
    if len(seeds) > 1:
        diffs = [a - b for a, b in zip(points[i]["losses"], points[best]["losses"], strict=True)]
        out["noise"] = statistics.stdev(diffs) / math.sqrt(len(diffs))
        out["noise_kind"] = f"std of the {len(diffs)} paired per-seed differences / sqrt({len(diffs)})"
    elif proxy_seed_std:
        out["noise"] = proxy_seed_std
        out["noise_kind"] = (f"1 seed: no paired difference to measure here; the seed std measured at proxy "
                             f"width {proxy_width}")  # fmt: skip
    if out["noise"]:
        out["in_noise"] = out["nats"] / out["noise"]
    elif out["nats"] == 0:
        out["in_noise"] = 0.0
    return out
