"""Leave-widest-out backtest: would the study's method have found the widest proxy's alphas from the others?

Pure analysis of trials a study already ran (nothing is trained). The width trend is fitted on every proxy
width but the widest (`analysis.recommend`, the same code the recommendation uses), its prediction is read
at the widest width, and that width's own trials say how good the predicted pair is there:

    regret = loss at the predicted pair - the best measured mean at that width

in nats and in units of that width's seed std (from its replicated points; None when nothing was
replicated), beside the regret of the defaults (1, 1) and (0.5, 0.5) at the same width.

Loss at a pair: the held-out width's own quadratic surrogate (full, or separable with too few trials for
the interaction: the fit `analysis.width_optimum` uses) when the pair lies inside the search box and the fit
exists; otherwise the nearest measured point (in log alpha), whose distance is reported. Each regret says
which (`source`). A surrogate can dip below the best measured mean, so a small negative regret is possible
and means "no worse than the best point, within the surrogate's error".

It runs for every study with 2 or more proxy widths. With 2 there is no trend to fit on the one remaining
width: the prediction is that width's optimum (`basis` "single_width"), which still tests whether the
optimum moves between the two widths. With several proxy depths it runs at the deepest one.

    >>> backtest = leave_widest_out(points, optima, space=space)  # doctest: +SKIP
    >>> backtest["regret"]["predicted"]["nats"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from alphasearch import analysis
from alphasearch.cache import json_safe
from alphasearch.errors import AlphaSearchError
from alphasearch.surrogate import fit_lstsq, full_coef, quad_eval, quad_features

DEFAULTS = {"(1, 1)": (1.0, 1.0), "(0.5, 0.5)": (0.5, 0.5)}


def leave_widest_out(
    points: Sequence[analysis.TrialPoint],
    optima: Sequence[analysis.WidthOptimum],
    *,
    space: analysis.SearchSpace,
    norm: str = "dyt",
    level: float = 0.9,
) -> dict[str, Any]:
    """The backtest as JSON (`status` "ok"), or {"status": "skipped" | "failed", "reason": ...}."""
    widths = sorted({o.width for o in optima})
    if len(widths) < 2:
        return {"status": "skipped", "reason": f"only {len(widths)} proxy width(s) finished; a backtest needs 2 or more"}
    widest = widths[-1]
    depth = max(o.depth for o in optima if o.width == widest)
    held = next(o for o in optima if o.width == widest and o.depth == depth)
    rest = [o for o in optima if o.width != widest]
    try:
        rec = analysis.recommend(rest, target_width=widest, target_depth=depth, norm=norm, space=space, level=level)
    except AlphaSearchError as exc:
        return {"status": "failed", "reason": f"the trend on widths {widths[:-1]} could not be fitted: {exc}"}
    mine = [p for p in points if p.width == widest and p.depth == depth and p.outcome == "completed"]
    means = _point_means(mine)
    if not means:
        return {"status": "skipped", "reason": f"no completed trials at width {widest}"}
    best_pair, best_mean = min(means.items(), key=lambda kv: kv[1])
    surface = _surface(mine, space)
    seed_std = held.seed_std
    predicted = (rec.alpha_attn, rec.alpha_ffn)
    regret = {"predicted": _regret(predicted, means, best_mean, surface, space, seed_std)}
    for label, pair in DEFAULTS.items():
        regret[label] = _regret(pair, means, best_mean, surface, space, seed_std)
    return json_safe({
        "status": "ok",
        "held_out_width": widest,
        "depth": depth,
        "fitted_widths": widths[:-1],
        "basis": dict(rec.basis),
        "predicted": {"alpha_attn": rec.alpha_attn, "alpha_ffn": rec.alpha_ffn},
        "interval": {"alpha_attn": list(rec.interval_attn), "alpha_ffn": list(rec.interval_ffn), "level": level},
        "measured_optimum": {"alpha_attn": held.alpha_attn, "alpha_ffn": held.alpha_ffn, "method": held.method},
        # predicted / the held-out width's own optimum: within a factor 2 is |log2 ratio| <= 1
        "log2_ratio": {"alpha_attn": math.log2(rec.alpha_attn / held.alpha_attn),
                       "alpha_ffn": math.log2(rec.alpha_ffn / held.alpha_ffn)},
        "best_measured": {"alpha_attn": best_pair[0], "alpha_ffn": best_pair[1], "mean": best_mean},
        "seed_std": seed_std,
        "regret": regret,
    })  # fmt: skip


def _point_means(points: Sequence[analysis.TrialPoint]) -> dict[tuple[float, float], float]:
    """Mean loss over seeds per distinct alpha pair."""
    sums: dict[tuple[float, float], list[float]] = {}
    for p in points:
        sums.setdefault((p.alpha_attn, p.alpha_ffn), []).append(float(p.loss))  # type: ignore[arg-type]
    return {k: sum(v) / len(v) for k, v in sums.items()}


def _surface(points: Sequence[analysis.TrialPoint], space: analysis.SearchSpace) -> tuple[str, np.ndarray] | None:
    """The held-out width's quadratic surrogate, as width_optimum picks it: (method, six coefficients)."""
    u = space.to_u(np.array([[p.alpha_attn, p.alpha_ffn] for p in points], float))
    z = np.array([p.loss for p in points], float)
    for method, need, separable in (("quadratic", analysis.MIN_QUADRATIC, False),
                                    ("separable", analysis.MIN_SEPARABLE, True)):  # fmt: skip
        fit = fit_lstsq(quad_features(u, separable=separable), z) if len(z) >= need else None
        if fit is not None:
            return method, full_coef(fit.coef, separable=separable)
    return None


def _regret(
    pair: tuple[float, float],
    means: dict[tuple[float, float], float],
    best_mean: float,
    surface: tuple[str, np.ndarray] | None,
    space: analysis.SearchSpace,
    seed_std: float | None,
) -> dict[str, Any]:
    u = space.to_u(np.array(pair, float))
    inside = bool(np.all(np.abs(u) <= 1 + 1e-9))
    if surface is not None and inside:
        method, coef = surface
        loss = float(quad_eval(coef, u[None])[0])
        source = f"surrogate ({method}) at width's trials"
    else:
        near = min(means, key=lambda k: float(np.sum((np.log(k) - np.log(pair)) ** 2)))
        loss = means[near]
        factor = math.exp(max(abs(math.log(near[0] / pair[0])), abs(math.log(near[1] / pair[1]))))
        why = "outside the search box" if not inside else "too few trials for a surrogate"
        source = f"nearest measured point ({near[0]:.3g}, {near[1]:.3g}), up to {factor:.2g}x away ({why})"
    nats = loss - best_mean
    return {
        "alpha_attn": pair[0], "alpha_ffn": pair[1], "loss": loss, "nats": nats,
        "in_seed_std": nats / seed_std if seed_std else None, "source": source,
    }  # fmt: skip
