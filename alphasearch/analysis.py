"""From finished proxy trials to a recommended alpha0 pair at the target width (DESIGN §6, §7).

Three steps, each with its uncertainty carried into the next:

1. Per proxy width (`width_optimum`): a quadratic surrogate of final val loss over
   (log alpha_attn, log alpha_ffn), fitted to the completed trials only, and its minimum inside the search
   box (not the single best trial). A case bootstrap over the completed trials gives a percentile
   interval per coordinate. The quadratic's minimum is only reported when the data support it: it may not
   predict a loss below the best measured mean by more than the noise of that difference, and it must
   pass a lack-of-fit test (an F test against replicate noise, and a Gaussian-process comparison).
   Otherwise a local (kernel-weighted) quadratic around the best measured point, with the same checks,
   and failing that the best measured point itself, bracketed by its neighbours (`method` says which). Diverged and stalled trials are counted and kept to mark the unstable region.
   Noise: seeds repeated at the same alphas give the seed noise (`seed_std`); the spread of the
   surrogate over the finished points gives the alpha effect; their ratio is the `snr`. With an RMSNorm
   baseline, `dyt_vs_rmsnorm_gap` says whether DyT keeps up at that width.
2. Across widths (`fit_width_trend`): log alpha* = b0 + b1 log width (+ b2 log depth when several depths
   ran). It is a random-effects meta-regression: each optimum's bootstrap interval gives its measurement
   error s_i; a DerSimonian-Laird tau^2 absorbs scatter around the power law beyond that; the interval is
   the wider of the Hartung-Knapp one (t quantile with k - p dof, variance scaled by the observed scatter)
   and the normal one that trusts the s_i (a refinement discussed by Jackson et al., Stat Med 2017), which
   keeps coverage at or above the nominal level with four or five widths. The exponent is b1.
3. `recommend`: the power-law prediction interval at the target width when the trend is significant,
   else the pooled optimum (intercept-only version of the same model) with an interval spanning both the
   pooled and the power-law intervals (a trend too weak to detect may still be real), with warnings.

Heatmap grids (`heatmap_grid`, `extrapolated_heatmap`) feed the dashboard and `alphasearch.plots`.
The surface models themselves live in `alphasearch.surrogate`.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> space = SearchSpace(attn=(0.01, 10.0), ffn=(0.01, 10.0))
    >>> def trial(w):
    ...     a, f = np.exp(rng.uniform(np.log(0.01), np.log(10), 2))
    ...     loss = 2 + 0.05 * np.log(a / (8 * w**-0.5)) ** 2 + 0.05 * np.log(f / (9 * w**-0.7)) ** 2
    ...     return TrialPoint(a, f, loss, "completed", width=w, depth=4)
    >>> optima = [width_optimum([trial(w) for _ in range(30)], space=space) for w in (64, 128, 256)]
    >>> rec = recommend(optima, target_width=4096, target_depth=32, space=space)
    >>> round(rec.fits["alpha_attn"].exponent, 2), round(rec.alpha_attn, 3)
    (-0.5, 0.125)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from alphasearch.errors import AlphaSearchError, ConfigError
from alphasearch.surrogate import (
    QUAD_TERMS,
    WidthAwareQuadratic,
    batched_lstsq,
    bootstrap_argmin,
    bootstrap_local_argmin,
    fit_local,
    fit_lstsq,
    full_coef,
    gp_residuals,
    gp_smooth,
    quad_box_min,
    quad_eval,
    quad_features,
)

OUTCOMES: tuple[str, ...] = ("completed", "diverged", "stalled", "pruned", "failed")
PARAMS: tuple[str, ...] = ("alpha_attn", "alpha_ffn")
MIN_QUADRATIC = 9  # six coefficients + three residual dof; fewer -> separable fit
MIN_SEPARABLE = 7  # five coefficients + two residual dof; fewer -> best trial
FEW_TRIALS = 2 * QUAD_TERMS  # below this a width's optimum is flagged as unreliable
MIN_WIDTHS = 3  # fewer proxy widths: a width trend can be fitted but not checked -> evidence "insufficient"
MAX_DECADES = 1.0  # a 90% interval at the target wider than this (hi / lo > 10): evidence "insufficient"
EDGE_TOL = 0.02  # in box units (half the log range = 1): an optimum this close to a bound is "on the edge"
MISFIT = 6.0  # lack-of-fit statistic above which the surface is "not a bowl" (null 99th pct ~3)
SNR_MIN = 3.0  # alpha effect / seed std below this: the alphas move the loss about as much as the seed does
GAP_MAX = 0.05  # DyT's best mean loss more than 5% above RMSNorm's: DyT does not keep up at that width
STALL_WARN = 0.2  # share of a width's runs that stalled above which the budget is too short there
SE_FLOOR = 0.01  # smallest measurement error (log alpha) a width may claim, so no width dominates the fit
LOF_P = 0.01  # lack-of-fit F test (quadratic vs replicate noise): p below this -> the quadratic does not fit
METHOD_WORDS = {
    "quadratic": "a full quadratic fit",
    "separable": "a separable quadratic fit (too few trials for the attention x ffn interaction)",
    "local": "a local quadratic around the best measured point (the global quadratic does not fit)",
    "best_point": "the best measured alpha point (no fitted surface is supported by the data)",
    "best_trial": "the single best trial (too few trials for any fit)",  # stored by older versions
}


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _json_array(a: np.ndarray | None) -> Any:
    if a is None:
        return None
    return [_json_array(r) for r in a] if np.ndim(a) > 1 else [_finite(v) for v in a]


def _exp(x: float) -> float:
    """exp that cannot overflow: a hopeless interval edge becomes huge, not an exception."""
    return math.exp(max(min(x, 700.0), -700.0))


def _z(level: float) -> float:
    return float(stats.norm.ppf((1 + level) / 2))


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ConfigError("level", f"got {level!r}; use a coverage probability such as 0.9")


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class TrialPoint:
    """One finished proxy trial. Only "completed" trials enter the loss surrogate.

    "diverged"/"stalled" mark the unstable region; "pruned" (partial loss) and "failed" are ignored.

        >>> TrialPoint(0.5, 0.2, 1.93, "completed", width=64, depth=4).outcome
        'completed'
    """

    alpha_attn: float
    alpha_ffn: float
    loss: float | None
    outcome: str
    width: int
    depth: int
    seed: int = 0
    alpha_final: float | None = None  # recorded for the user; the search ties it to alpha_ffn

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ConfigError("outcome", f"got {self.outcome!r}; use one of {', '.join(OUTCOMES)}")
        for name in ("alpha_attn", "alpha_ffn"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(name, f"got {v!r}; alpha0 must be a positive number")
        if self.outcome == "completed" and _finite(self.loss) is None:
            raise ConfigError("loss", "a completed trial needs a finite final val loss; mark it 'diverged'")
        for name in ("width", "depth"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(name, f"got {getattr(self, name)!r}; use a positive integer")


@dataclass(frozen=True)
class SearchSpace:
    """Log-scale bounds of the alpha0 search: attn = (lo, hi), ffn = (lo, hi), 0 < lo < hi.

    >>> SearchSpace(attn=(0.05, 5.0), ffn=(0.01, 2.0)).bounds("alpha_ffn")
    (0.01, 2.0)
    """

    attn: tuple[float, float]
    ffn: tuple[float, float]

    def __post_init__(self) -> None:
        for name, (lo, hi) in (("space.attn", self.attn), ("space.ffn", self.ffn)):
            if not (0 < lo < hi and math.isfinite(hi)):
                raise ConfigError(name, f"got ({lo!r}, {hi!r}); use (lo, hi) with 0 < lo < hi")

    def bounds(self, param: str) -> tuple[float, float]:
        lo, hi = self.attn if param == "alpha_attn" else self.ffn
        return float(lo), float(hi)

    @property
    def _centre_half(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.log([self.attn[0], self.ffn[0]]), np.log([self.attn[1], self.ffn[1]])
        return (lo + hi) / 2, (hi - lo) / 2

    def to_u(self, alphas: np.ndarray) -> np.ndarray:
        """Alphas (..., 2) -> box coordinates, the search space being [-1, 1]^2."""
        c, h = self._centre_half
        return (np.log(alphas) - c) / h

    def to_alpha(self, u: np.ndarray) -> np.ndarray:
        c, h = self._centre_half
        return np.exp(np.asarray(u) * h + c)


def _one_width(points: Iterable[TrialPoint], name: str = "points") -> list[TrialPoint]:
    pts = list(points)
    if not pts:
        raise ConfigError(name, "no trials given; pass the trials of one proxy width")
    keys = sorted({(p.width, p.depth) for p in pts})
    if len(keys) > 1:
        raise ConfigError(name, f"trials from several (width, depth) pairs {keys}; group them first")
    return pts


def _completed_uz(pts: Sequence[TrialPoint], space: SearchSpace) -> tuple[np.ndarray, np.ndarray]:
    done = [p for p in pts if p.outcome == "completed"]
    alphas = np.array([[p.alpha_attn, p.alpha_ffn] for p in done], float).reshape(-1, 2)
    return space.to_u(alphas), np.array([p.loss for p in done], float)


# ------------------------------------------------------------------------------------ per-width optimum


@dataclass(frozen=True)
class WidthOptimum:
    """The estimated best alpha pair at one proxy (width, depth), with a bootstrap interval."""

    width: int
    depth: int
    alpha_attn: float
    alpha_ffn: float
    interval_attn: tuple[float, float]
    interval_ffn: tuple[float, float]
    predicted_loss: float  # surrogate value at the optimum
    best_trial_loss: float
    n_completed: int
    n_diverged: int
    n_stalled: int
    on_edge: list[str]  # which of "alpha_attn"/"alpha_ffn" sits on the search-space edge
    method: str  # "quadratic" | "separable" | "local" | "best_point" ("best_trial": older versions)
    residual_std: float | None  # surrogate residual std: trial noise + lack of fit (nats/byte)
    replicate_std: float | None = None  # pure noise from replicated alphas (several seeds), if any
    lack_of_fit: float | None = None  # > MISFIT: not a bowl in log alpha, the optimum may be biased
    level: float = 0.9
    n_pruned: int = 0
    n_failed: int = 0
    # Noise (issue 7). The defaults read "not measured", so optima stored by older versions still load.
    alpha_effect: float | None = None  # max - min of the surrogate over the finished points (_alpha_effect)
    best_mean_loss: float | None = None  # lowest mean over seeds of a finished alpha point
    rmsnorm_loss: float | None = None  # mean final val loss of the RMSNorm baseline here, if it ran
    n_replicated: int = 0  # finished alpha points with 2+ completed seeds
    # Honesty of the optimum (issue 14). Defaults read "not checked", so older optima still load.
    method_reason: str | None = None  # why the quadratic's minimum was not used, when it was not
    quadratic_loss: float | None = None  # the (global) quadratic's own minimum, whatever method was used
    lack_of_fit_p: float | None = None  # F test of the quadratic against replicate noise (None: no dof)
    # Std of the loss DIFFERENCE between two alpha points run under the same (paired) seeds, from points
    # with 2+ common seeds; None when too few points were replicated. Common seed effects cancel in it.
    diff_std: float | None = None

    @property
    def noise(self) -> float | None:
        """The noise the optimum is checked against: seed std, or the surrogate's residual std without replicates."""
        return self.replicate_std if self.replicate_std else self.residual_std

    @property
    def seed_std(self) -> float | None:
        """Pooled std of final val loss between seeds at the same alphas (= replicate_std)."""
        return self.replicate_std

    @property
    def snr(self) -> float | None:
        """alpha_effect / seed_std: how far the alphas move the loss, in units of seed noise."""
        if self.alpha_effect is None or not self.seed_std:
            return None
        return self.alpha_effect / self.seed_std

    @property
    def dyt_vs_rmsnorm_gap(self) -> float | None:
        """(best DyT mean loss - RMSNorm mean loss) / RMSNorm mean loss; > 0: DyT is behind."""
        if self.best_mean_loss is None or not self.rmsnorm_loss:
            return None
        return (self.best_mean_loss - self.rmsnorm_loss) / self.rmsnorm_loss

    @property
    def stall_rate(self) -> float | None:
        """Share of the finished runs (completed, diverged or stalled; every seed counts) that stalled."""
        runs = self.n_completed + self.n_diverged + self.n_stalled
        return self.n_stalled / runs if runs else None

    def log_se(self, param: str) -> float:
        """Measurement error of log alpha*, read off the interval as if it were normal."""
        lo, hi = self.interval_attn if param == "alpha_attn" else self.interval_ffn
        return math.log(hi / lo) / (2 * _z(self.level))

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d.update(interval_attn=list(self.interval_attn), interval_ffn=list(self.interval_ffn))
        for name in ("seed_std", "snr", "dyt_vs_rmsnorm_gap", "stall_rate", "noise"):  # derived: not read back
            d[name] = getattr(self, name)
        return {k: _finite(v) if isinstance(v, float) else v for k, v in d.items()}


def _surface(u: np.ndarray, z: np.ndarray) -> tuple[str, np.ndarray | None, float | None]:
    """Pick the richest surrogate the data support -> (method, six coefficients or None, residual std)."""
    for method, need in (("quadratic", MIN_QUADRATIC), ("separable", MIN_SEPARABLE)):
        separable = method == "separable"
        fit = fit_lstsq(quad_features(u, separable=separable), z) if len(z) >= need else None
        if fit is not None:
            return method, full_coef(fit.coef, separable=separable), fit.resid_std
    return "best_trial", None, None


def _replicate_std(u: np.ndarray, z: np.ndarray) -> float | None:
    _, inv, counts = np.unique(np.round(u, 9), axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    if not (counts > 1).any():
        return None
    resid = z - (np.bincount(inv, z) / counts)[inv]
    return float(np.sqrt(resid @ resid / (len(z) - len(counts))))


def _alpha_effect(u: np.ndarray, z: np.ndarray, coef6: np.ndarray | None) -> tuple[float | None, float, int]:
    """(alpha effect, lowest per-point mean loss, replicated points) of one width's completed runs.

    The effect is the range of the fitted surrogate over the distinct finished alpha points: a smoothed
    reading, because the range of raw per-point means grows with the number of points even where the
    alphas do nothing (single-seed points of pure noise: about 3 seed stds at 9 points, 4 at 24). Below 7
    finished runs there is no surrogate and the range of the per-point means is all there is (biased up).
    """
    uniq, inv, counts = np.unique(np.round(u, 9), axis=0, return_inverse=True, return_counts=True)
    means = np.bincount(inv.ravel(), z) / counts
    values = quad_eval(coef6, uniq) if coef6 is not None else means
    effect = float(values.max() - values.min()) if len(uniq) > 1 else None
    return effect, float(means.min()), int((counts > 1).sum())


def width_optimum(
    points: Iterable[TrialPoint],
    *,
    space: SearchSpace,
    level: float = 0.9,
    n_boot: int = 200,
    seed: int = 0,
    baseline: Sequence[float] | None = None,
) -> WidthOptimum:
    """Surrogate optimum of one proxy (width, depth) with percentile-bootstrap intervals at `level`.

    `baseline`: final val losses of the RMSNorm baseline at this (width, depth), if it ran (any seeds);
    their mean becomes `rmsnorm_loss`, against which `dyt_vs_rmsnorm_gap` is measured.

    >>> pts = [TrialPoint(a, f, 2 + np.log(a / 0.5) ** 2 + np.log(f / 0.2) ** 2, "completed", 64, 4)
    ...        for a in (0.1, 0.3, 1, 3) for f in (0.05, 0.1, 0.3, 1)]
    >>> opt = width_optimum(pts, space=SearchSpace(attn=(0.05, 5), ffn=(0.01, 2)))
    >>> round(opt.alpha_attn, 3), round(opt.alpha_ffn, 3), opt.method
    (0.5, 0.2, 'quadratic')
    """
    _check_level(level)
    pts = _one_width(points)
    counts = Counter(p.outcome for p in pts)
    u, z = _completed_uz(pts, space)
    if len(z) == 0:
        raise AlphaSearchError(
            f"width {pts[0].width}: no trial finished ({counts['diverged']} diverged, {counts['stalled']} "
            "stalled), so there is no loss surface to fit. Move the search space towards alphas where "
            "trials train (see the markers on this width's heatmap) or lower the learning rate, then rerun."
        )
    method, coef6, resid_std = _surface(u, z)
    seeds = np.array([p.seed for p in pts if p.outcome == "completed"])
    rep_std = _replicate_std(u, z)
    lof = None if coef6 is None else gp_residuals(u, z, separable=method == "separable").lack_of_fit
    choice = _choose(u, z, method, coef6, rep_std or resid_std, lof, _lack_of_fit_p(u, z, coef6, method))
    rng = np.random.default_rng(seed)
    if choice.method in ("quadratic", "separable"):
        boots = bootstrap_argmin(u, z, method=method, n_boot=n_boot, rng=rng)
    elif choice.method == "local":
        boots = bootstrap_local_argmin(
            u, z, centre=choice.centre, bandwidth=choice.bandwidth, lo=choice.lo, hi=choice.hi, n_boot=n_boot, rng=rng
        )
    else:
        boots = np.empty((0, 2))
    u_star, pred = choice.u, choice.pred
    if choice.method == "best_point":
        lo, hi = _bracket(u, z, u_star, rep_std or resid_std, level)
    elif len(boots) >= max(n_boot // 2, 10):
        q = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2], axis=0)
        lo, hi = np.minimum(q[0], u_star), np.maximum(q[1], u_star)
    else:  # most resamples were singular: all we know is that the optimum is in the (trust) region
        lo, hi = choice.lo, choice.hi
    a_star, a_lo, a_hi = space.to_alpha(u_star), space.to_alpha(lo), space.to_alpha(hi)
    effect, best_mean, n_replicated = _alpha_effect(u, z, coef6)
    base = [float(v) for v in baseline or () if _finite(v) is not None]
    return WidthOptimum(
        width=pts[0].width,
        depth=pts[0].depth,
        alpha_attn=float(a_star[0]),
        alpha_ffn=float(a_star[1]),
        interval_attn=(float(a_lo[0]), float(a_hi[0])),
        interval_ffn=(float(a_lo[1]), float(a_hi[1])),
        predicted_loss=float(pred),
        best_trial_loss=float(z.min()),
        n_completed=len(z),
        n_diverged=counts["diverged"],
        n_stalled=counts["stalled"],
        on_edge=[p for i, p in enumerate(PARAMS) if abs(u_star[i]) >= 1 - choice.edge_tol],
        method=choice.method,
        residual_std=resid_std,
        replicate_std=rep_std,
        lack_of_fit=lof,
        level=level,
        n_pruned=counts["pruned"],
        n_failed=counts["failed"],
        alpha_effect=effect,
        best_mean_loss=best_mean,
        rmsnorm_loss=sum(base) / len(base) if base else None,
        n_replicated=n_replicated,
        method_reason=choice.reason,
        quadratic_loss=None if coef6 is None else float(quad_box_min(coef6)[1]),
        lack_of_fit_p=_lack_of_fit_p(u, z, coef6, method),
        diff_std=_paired_diff_std(u, z, seeds),
    )


# ------------------------------------------------------------------------- is the optimum supported?


@dataclass(frozen=True)
class _Choice:
    """Which estimate of a width's optimum the data support, and where it may lie."""

    method: str
    u: np.ndarray  # the optimum, box units
    pred: float  # its predicted (or measured) loss
    reason: str | None  # why the global quadratic was not used
    lo: np.ndarray  # region the optimum was searched in (the box, or the local model's trust region)
    hi: np.ndarray
    centre: np.ndarray | None = None  # local model: its centre and kernel bandwidth
    bandwidth: float = 0.0
    edge_tol: float = EDGE_TOL  # how close to a bound (box units) counts as "on the edge"


def _per_point(u: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct alpha points -> (points (m, 2), index of each trial's point (n,), seeds per point, means)."""
    uniq, inv, counts = np.unique(np.round(u, 9), axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    return uniq, inv, counts, np.bincount(inv, z) / counts


def _spacing(uniq: np.ndarray) -> float:
    """Typical distance between neighbouring alpha points (box units): a grid's step."""
    if len(uniq) < 2:
        return 2.0
    d = np.sqrt(((uniq[:, None] - uniq[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))


def _best_index(counts: np.ndarray, means: np.ndarray, noise: float | None) -> int:
    """The best measured point: the lowest mean, but a replicated point within one difference-std of it wins
    (a single-seed point that is lowest by less than the noise is no better measured)."""
    b = int(np.argmin(means))
    sd = (noise or 0.0) * np.sqrt(1 / counts + 1 / counts[b])
    near = np.flatnonzero(means <= means[b] + sd)
    return int(min(near, key=lambda i: (-counts[i], means[i])))


def _lack_of_fit_p(u: np.ndarray, z: np.ndarray, coef6: np.ndarray | None, method: str) -> float | None:
    """p-value of the classic lack-of-fit F test: the quadratic's residuals beyond the pure (replicate) error.

    Needs 2+ degrees of freedom of pure error (replicated points) and more distinct points than
    coefficients; None otherwise."""
    if coef6 is None:
        return None
    _, inv, counts, means = _per_point(u, z)
    n, m = len(z), len(counts)
    p = QUAD_TERMS - (method == "separable")
    if n - m < 2 or m - p < 1:
        return None
    ss_pe = float(((z - means[inv]) ** 2).sum())
    ss_res = float(((z - quad_eval(coef6, u)) ** 2).sum())
    if ss_pe <= 0:
        return 0.0 if ss_res > 1e-18 else 1.0
    f = (max(ss_res - ss_pe, 0.0) / (m - p)) / (ss_pe / (n - m))
    return float(stats.f.sf(f, m - p, n - m))


def _paired_diff_std(u: np.ndarray, z: np.ndarray, seeds: np.ndarray) -> float | None:
    """Std of L(a, s) - L(b, s) between two alpha points under the same seed s, pooled over every pair of
    points with 2+ common seeds (the spread of the per-seed differences around their mean)."""
    uniq, inv, counts, _ = _per_point(u, z)
    rep = np.flatnonzero(counts > 1)
    by_point = [{int(s): float(v) for s, v in zip(seeds[inv == i], z[inv == i], strict=True)} for i in rep]
    ss, dof = 0.0, 0
    for i in range(len(by_point)):
        for j in range(i + 1, len(by_point)):
            common = sorted(set(by_point[i]) & set(by_point[j]))
            if len(common) < 2:
                continue
            d = np.array([by_point[i][s] - by_point[j][s] for s in common])
            ss, dof = ss + float(((d - d.mean()) ** 2).sum()), dof + len(d) - 1
    return math.sqrt(ss / dof) if dof else None


def _unsupported(pred: float, best_mean: float, best_count: int, noise: float | None, what: str) -> str | None:
    """Why a fitted minimum is not supported by the data, or None when it is.

    Supported: its predicted loss lies below the best measured mean by at most the noise of their
    difference, noise x sqrt(1 + 1 / seeds at the best point) (one new run there against that mean)."""
    if noise is None:
        return None
    tol = noise * math.sqrt(1 + 1 / best_count) + 1e-9 * abs(best_mean)
    if pred < best_mean - tol:
        return (
            f"{what} predicts {pred:.4g} at its minimum, {best_mean - pred:.3g} below the best measured mean "
            f"{best_mean:.4g}, more than the noise of that difference ({tol:.3g})"
        )
    return None


def _choose(
    u: np.ndarray,
    z: np.ndarray,
    method: str,
    coef6: np.ndarray | None,
    noise: float | None,
    gp_lof: float | None,
    lof_p: float | None,
) -> _Choice:
    """The global quadratic when it fits and its minimum is supported; else a local quadratic around the
    best measured point (minimised within one design step of it), with the same support check; else the
    best measured point."""
    box_lo, box_hi = np.full(2, -1.0), np.full(2, 1.0)
    uniq, _, counts, means = _per_point(u, z)
    spacing, lowest = _spacing(uniq), int(np.argmin(means))
    best_mean, best_count = float(means[lowest]), int(counts[lowest])
    b = _best_index(counts, means, noise)
    reasons = []
    if coef6 is None:
        reasons.append(f"only {len(z)} trials finished, too few for any fit")
    else:
        u_q, pred_q = quad_box_min(coef6)
        if lof_p is not None and lof_p < LOF_P:
            reasons.append(f"the quadratic fails a lack-of-fit test against the seed noise (p = {lof_p:.2g})")
        if gp_lof is not None and gp_lof > MISFIT:
            reasons.append(f"a smoother model explains the trials much better (lack of fit {gp_lof:.1f} > {MISFIT:.0f})")
        why = _unsupported(float(pred_q), best_mean, best_count, noise, "the quadratic")
        if why:
            reasons.append(why)
        if not reasons:
            return _Choice(method, u_q, float(pred_q), None, box_lo, box_hi)
        centre, bandwidth = uniq[b], max(spacing, 0.25)
        fit = fit_local(u, z, centre, bandwidth) if len(uniq) >= QUAD_TERMS else None
        lo, hi = np.maximum(centre - spacing, box_lo), np.minimum(centre + spacing, box_hi)
        if fit is None:
            reasons.append("a local quadratic around the best point is singular")
        else:
            u_l, pred_l = quad_box_min(fit.coef, lo, hi)
            why = _unsupported(float(pred_l), best_mean, best_count, noise, "the local quadratic")
            if why is None:
                return _Choice("local", u_l, float(pred_l), "; ".join(reasons), lo, hi, centre, bandwidth)
            reasons.append(why)
    lo, hi = np.maximum(uniq[b] - spacing, box_lo), np.minimum(uniq[b] + spacing, box_hi)
    # A measured point is on the edge when it is the outermost one: within half a design step of the bound.
    return _Choice(
        "best_point", uniq[b].astype(float), float(means[b]), "; ".join(reasons), lo, hi, edge_tol=max(EDGE_TOL, spacing / 2)
    )


def _bracket(u: np.ndarray, z: np.ndarray, at: np.ndarray, noise: float | None, level: float) -> tuple[np.ndarray, ...]:
    """Interval of a best measured point: every point whose mean is within the level's noise of the difference
    from it, widened by one design step each way (the optimum lies between worse neighbours)."""
    uniq, _, counts, means = _per_point(u, z)
    b = int(np.argmin(((uniq - at) ** 2).sum(-1)))
    sd = (noise or 0.0) * np.sqrt(1 / counts + 1 / counts[b])
    tied = uniq[means <= means[b] + _z(level) * sd]
    step = _spacing(uniq)
    lo = np.maximum(np.minimum(tied.min(axis=0), at) - step, -1.0)
    hi = np.minimum(np.maximum(tied.max(axis=0), at) + step, 1.0)
    return lo, hi


# ------------------------------------------------------------------------------------------ width trend


@dataclass(frozen=True)
class _Meta:
    coef: np.ndarray
    cov: np.ndarray  # already multiplied by `scale`
    tau2: float
    scale: float
    dof: int
    quantile: float
    r2: float | None


def _meta_regression(X: np.ndarray, y: np.ndarray, s: np.ndarray, level: float) -> _Meta:
    """Random-effects meta-regression of y on X with known errors s (DerSimonian-Laird tau^2; interval
    the wider of Hartung-Knapp and normal, see the module docstring)."""
    k, p = X.shape
    dof = k - p

    def wls(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a_inv = np.linalg.inv(X.T @ (w[:, None] * X))
        coef = a_inv @ X.T @ (w * y)
        return coef, y - X @ coef, a_inv

    w = 1 / s**2
    tau2 = 0.0
    if dof > 0:
        _, r, a_inv = wls(w)
        trace_p = w.sum() - np.trace(a_inv @ X.T @ ((w**2)[:, None] * X))
        tau2 = max(0.0, float((w * r * r).sum() - dof) / trace_p)
    w = 1 / (s**2 + tau2)
    coef, r, a_inv = wls(w)
    quantile = float(stats.t.ppf((1 + level) / 2, dof)) if dof > 0 else _z(level)
    # Wider of the Hartung-Knapp interval (t quantile, variance scaled by the observed scatter q) and the
    # normal interval that trusts the measurement errors: plain Hartung-Knapp undercovers with four widths
    # (~0.85 at level 0.9 in our simulations), the max(q, 1) fix overcovers (~0.997) at 1.5x the width.
    scale = max(float((w * r * r).sum()) / dof, (_z(level) / quantile) ** 2) if dof > 0 else 1.0
    ss_tot = float((w * (y - (w * y).sum() / w.sum()) ** 2).sum())
    r2 = None  # intercept-only or exact fit: r2 says nothing
    if p > 1 and dof > 0 and ss_tot > 0:
        r2 = 1 - float((w * r * r).sum()) / ss_tot
    return _Meta(coef, scale * a_inv, tau2, scale, dof, quantile, r2)


def _design(widths: Sequence[float] | None, depths: Sequence[float], use_depth: bool) -> np.ndarray:
    cols = [np.ones(len(depths))]
    cols += [] if widths is None else [np.log(np.asarray(widths, float))]
    cols += [np.log(np.asarray(depths, float))] if use_depth else []
    return np.stack(cols, axis=1)


def _se_vector(opts: Sequence[WidthOptimum], param: str) -> np.ndarray:
    s = np.array([o.log_se(param) for o in opts])
    # An edge optimum's interval can collapse onto the bound; no width may claim much more precision
    # than its peers, or it alone would set the slope.
    return np.maximum(s, max(SE_FLOOR, 0.25 * float(np.median(s))))


@dataclass(frozen=True)
class WidthFit:
    """log alpha* = intercept + exponent * log width (+ depth_exponent * log depth), with intervals."""

    param: str
    exponent: float
    exponent_interval: tuple[float, float]
    r2: float | None
    significant: bool  # the exponent interval excludes 0
    level: float
    n_points: int
    dof: int  # residual degrees of freedom; 0 -> the interval counts measurement error only
    tau: float  # scatter of the optima around the power law beyond their measurement error (log units)
    scale: float  # variance scale applied: Hartung-Knapp q, at least (z / t)^2 (see _meta_regression)
    depth_exponent: float | None = None
    depth_exponent_interval: tuple[float, float] | None = None
    coef: tuple[float, ...] = field(default=(), repr=False)
    cov: tuple[tuple[float, ...], ...] = field(default=(), repr=False)
    quantile: float = field(default=0.0, repr=False)

    def predict(self, width: float, depth: float | None = None) -> tuple[float, float, float]:
        """(centre, lo, hi) in alpha units: a prediction interval for the optimum at (width, depth).

        It adds the fit's uncertainty at that width to tau^2, the scatter a new width's optimum has
        around the power law, so far extrapolation widens it.
        """
        if self.depth_exponent is not None and depth is None:
            raise ConfigError("depth", "this fit has a depth term; pass the depth to predict at")
        x0 = _design([width], [depth or 1], self.depth_exponent is not None)[0]
        mean = float(x0 @ np.array(self.coef))
        half = self.quantile * math.sqrt(float(x0 @ np.array(self.cov) @ x0) + self.tau**2)
        return _exp(mean), _exp(mean - half), _exp(mean + half)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "exponent": _finite(self.exponent),
            "exponent_interval": [_finite(v) for v in self.exponent_interval],
            "r2": _finite(self.r2),
            "significant": self.significant,
            "level": self.level,
            "n_points": self.n_points,
            "dof": self.dof,
            "tau": _finite(self.tau),
            "scale": _finite(self.scale),
        }
        if self.depth_exponent is not None and self.depth_exponent_interval is not None:
            d["depth_exponent"] = _finite(self.depth_exponent)
            d["depth_exponent_interval"] = [_finite(v) for v in self.depth_exponent_interval]
        return d


def _check_optima(optima: Iterable[WidthOptimum]) -> list[WidthOptimum]:
    opts = list(optima)
    if not opts:
        raise ConfigError("optima", "no per-width optima given; run width_optimum on each proxy width first")
    return opts


def fit_width_trend(optima: Iterable[WidthOptimum], *, level: float = 0.9) -> dict[str, WidthFit]:
    """Power-law fit of each optimum against width -> {"alpha_attn": WidthFit, "alpha_ffn": WidthFit}.

    Needs optima at two or more widths; with several proxy depths log depth is an extra regressor.

        >>> fits = fit_width_trend(optima)  # doctest: +SKIP
        >>> fits["alpha_ffn"].exponent, fits["alpha_ffn"].predict(4096, 32)  # doctest: +SKIP
    """
    _check_level(level)
    opts = _check_optima(optima)
    if len({o.width for o in opts}) < 2:
        raise ConfigError("optima", f"all optima are at width {opts[0].width}; add proxy widths for a trend")
    use_depth = len({o.depth for o in opts}) > 1
    X = _design([o.width for o in opts], [o.depth for o in opts], use_depth)
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ConfigError("optima", "width and depth vary together; vary width at a fixed depth too")
    fits = {}
    for param in PARAMS:
        y = np.log([getattr(o, param) for o in opts])
        m = _meta_regression(X, y, _se_vector(opts, param), level)
        half = m.quantile * np.sqrt(np.diag(m.cov))
        ci = (float(m.coef[1] - half[1]), float(m.coef[1] + half[1]))
        fits[param] = WidthFit(
            param=param,
            exponent=float(m.coef[1]),
            exponent_interval=ci,
            r2=m.r2,
            significant=not ci[0] <= 0 <= ci[1],
            level=level,
            n_points=len(opts),
            dof=m.dof,
            tau=math.sqrt(m.tau2),
            scale=m.scale,
            depth_exponent=float(m.coef[2]) if use_depth else None,
            depth_exponent_interval=(float(m.coef[2] - half[2]), float(m.coef[2] + half[2]))
            if use_depth
            else None,
            coef=tuple(map(float, m.coef)),
            cov=tuple(map(tuple, m.cov.tolist())),
            quantile=m.quantile,
        )
    return fits


def _pooled(opts: Sequence[WidthOptimum], param: str, depth: int, level: float) -> tuple[float, float, float]:
    """Width-free optimum (same meta-regression without the width term) at `depth` -> (centre, lo, hi)."""
    use_depth = len({o.depth for o in opts}) > 1
    m = _meta_regression(
        _design(None, [o.depth for o in opts], use_depth),
        np.log([getattr(o, param) for o in opts]),
        _se_vector(opts, param),
        level,
    )
    x0 = _design(None, [depth], use_depth)[0]
    mean, half = float(x0 @ m.coef), m.quantile * math.sqrt(float(x0 @ m.cov @ x0) + m.tau2)
    return _exp(mean), _exp(mean - half), _exp(mean + half)


# ------------------------------------------------------------------------------------- recommendation


@dataclass(frozen=True)
class Recommendation:
    """The alpha0 pair to use at the target (width, depth); `to_dict()` is the DESIGN §7 JSON."""

    width: int
    depth: int
    norm: str
    alpha_attn: float
    alpha_ffn: float
    alpha_final: float  # = alpha_ffn, as "other" in the published LLaMA runs
    interval_attn: tuple[float, float]
    interval_ffn: tuple[float, float]
    interval_final: tuple[float, float]
    level: float
    fits: dict[str, WidthFit]  # empty when only one proxy width ran
    proxy_widths: list[int]
    extrapolation_factor: float  # target width / largest proxy width
    warnings: list[str]
    studies: list[str]
    basis: dict[str, str]  # per param: "power_law" | "pooled" | "single_width"
    per_width: list[WidthOptimum] = field(default_factory=list)
    evidence: str = "sufficient"  # "insufficient": no interval a user can act on (see `next_steps`)
    next_steps: list[str] = field(default_factory=list)  # what to run to get one

    def to_dict(self) -> dict[str, Any]:
        no_fit = {"exponent": None, "exponent_interval": None, "r2": None, "significant": False}
        return {
            "width": self.width,
            "depth": self.depth,
            "norm": self.norm,
            "alpha_attn": self.alpha_attn,
            "alpha_ffn": self.alpha_ffn,
            "alpha_final": self.alpha_final,
            "interval": {
                "alpha_attn": list(self.interval_attn),
                "alpha_ffn": list(self.interval_ffn),
                "alpha_final": list(self.interval_final),
                "level": self.level,
            },
            "fit": {p: self.fits[p].to_dict() if p in self.fits else dict(no_fit) for p in PARAMS},
            "proxy_widths": list(self.proxy_widths),
            "extrapolation_factor": self.extrapolation_factor,
            "warnings": list(self.warnings),
            "studies": list(self.studies),
            "basis": dict(self.basis),
            "per_width": [o.to_dict() for o in self.per_width],
            "evidence": self.evidence,
            "next_steps": list(self.next_steps),
        }


def _noise_warnings(o: WidthOptimum, at: str) -> list[str]:
    """Seed noise vs alpha effect, DyT vs RMSNorm, and stalls at one (width, depth); `at` names it."""
    out = []
    snr, gap, stall = o.snr, o.dyt_vs_rmsnorm_gap, o.stall_rate
    if o.seed_std is None:
        out.append(
            f"No replicates at {at}: seed noise unknown, so nothing says whether the loss differences between "
            "alphas there are larger than a change of training seed. Set replicate_best to 2 or more (or "
            "seeds) and rerun."
        )
    elif snr is not None and snr < SNR_MIN:
        out.append(
            f"Alpha effect within noise at {at} (SNR {snr:.1f} < {SNR_MIN:.0f}): across the finished alphas the "
            f"fitted loss moves by {o.alpha_effect:.3g} nats/byte, while another training seed at the same "
            f"alphas moves it by {o.seed_std:.3g} (std), so the optimum there is mostly noise. Train longer "
            "(tokens_per_trial), average more seeds per point (seeds) or widen the search space, and rerun."
        )
    if gap is not None and gap > GAP_MAX:
        out.append(
            f"DyT trails RMSNorm by {gap:.1%} at {at}: the best DyT point averages {o.best_mean_loss:.3f} "
            f"nats/byte against RMSNorm's {o.rmsnorm_loss:.3f}, so at this training budget no alpha0 in the "
            "search space lets DyT keep up there. Check the learning rate, warmup and tokens_per_trial for "
            "that width before trusting its optimum."
        )
    if stall is not None and stall >= STALL_WARN:
        runs = o.n_completed + o.n_diverged + o.n_stalled
        out.append(
            f"{o.n_stalled} of {runs} runs stalled ({stall:.0%}) at {at}: they learned nothing "
            "input-dependent and are left out of the loss surface. Train longer there (tokens_per_trial) "
            "or move the search space away from the stalled alphas (markers on that width's heatmap)."
        )
    return out


def _per_width_warnings(opts: Sequence[WidthOptimum], space: SearchSpace) -> list[str]:
    out = []
    several_depths = len({o.depth for o in opts}) > 1
    for o in sorted(opts, key=lambda o: (o.width, o.depth)):
        where = f"At width {o.width} (depth {o.depth})"
        for param in o.on_edge:
            lo, hi = space.bounds(param)
            value = getattr(o, param)
            side, bound = ("lower", lo) if value < math.sqrt(lo * hi) else ("upper", hi)
            out.append(
                f"{where} the best {param} ({value:.3g}) sits on the {side} edge of the search space "
                f"({lo:.3g} to {hi:.3g}), so the true optimum may lie outside it and the width fit is biased. "
                f"Widen the {param} range {'below' if side == 'lower' else 'above'} {bound:.3g} and rerun."
            )
        if o.lack_of_fit is not None and o.lack_of_fit > MISFIT and o.method in ("quadratic", "separable"):
            out.append(
                f"{where} the loss surface is not a quadratic bowl in log alpha (a smoother fit explains the "
                "trials much better), so the optimum there may be off by more than its interval. Narrow the "
                f"search space around it (e.g. alpha_attn {o.alpha_attn / 4:.3g} to {o.alpha_attn * 4:.3g}, "
                f"alpha_ffn {o.alpha_ffn / 4:.3g} to {o.alpha_ffn * 4:.3g}) and rerun that width."
            )
        if o.n_completed >= FEW_TRIALS and o.method in ("local", "best_point"):
            out.append(
                f"{where} the quadratic surface is not supported by the trials ({o.method_reason}), so the "
                f"optimum comes from {METHOD_WORDS[o.method]}; its interval brackets the points that are not "
                "measurably worse. More seeds per point (seeds) or a finer grid around it narrow it."
            )
        elif o.n_completed < FEW_TRIALS or o.method != "quadratic":
            out.append(
                f"{where} only {o.n_completed} trials finished ({o.n_diverged} diverged, {o.n_stalled} "
                f"stalled), so its optimum comes from {METHOD_WORDS[o.method]} and is unreliable. "
                f"Run more trials there (at least {FEW_TRIALS} should finish)."
            )
        out += _noise_warnings(o, f"width {o.width}" + (f" depth {o.depth}" if several_depths else ""))
    return out


def _no_trend_warning(fit: WidthFit, pooled: tuple[float, ...], trend: tuple[float, ...]) -> str:
    lo, hi = fit.exponent_interval
    return (
        f"No significant width trend for {fit.param}: exponent {fit.exponent:+.2f}, {fit.level:.0%} interval "
        f"[{lo:+.2f}, {hi:+.2f}] includes 0. The recommendation is the pooled optimum across proxy widths, "
        f"{pooled[0]:.3g} [{pooled[1]:.3g}, {pooled[2]:.3g}]; the power-law extrapolation would give "
        f"{trend[0]:.3g} [{trend[1]:.3g}, {trend[2]:.3g}], and the reported interval spans both. To tell "
        "them apart, add proxy widths spread further apart or more trials per width."
    )


def _design_warnings(
    opts: Sequence[WidthOptimum], fits: dict[str, WidthFit], target_depth: int, factor: float, limit: float
) -> list[str]:
    widths, depths = sorted({o.width for o in opts}), sorted({o.depth for o in opts})
    out = []
    if len(widths) == 1:
        out.append(
            f"Only one proxy width ({widths[0]}) was run, so no width trend can be fitted; the recommendation "
            f"is the optimum found at width {widths[0]}, which assumes the best alpha does not change with "
            "width (published DyT results say it shrinks as models get wider). Run proxies at 3 or more widths."
        )
    elif fits and min(f.dof for f in fits.values()) == 0:
        out.append(
            f"Only {len(widths)} proxy widths {widths}: the exponent interval counts each width's "
            "measurement error but cannot check how far the optima scatter around a power law. "
            "Add another proxy width."
        )
    if factor > limit:
        out.append(
            f"The target width is {factor:.0f}x the largest proxy width ({widths[-1]}), beyond the {limit:.0f}x "
            "this tool trusts; the interval assumes the power law holds that far. Add a larger proxy width, "
            "or treat the recommendation as the centre of a small sweep at the target."
        )
    if len(depths) == 1 and target_depth != depths[0]:
        out.append(
            f"Proxies ran at depth {depths[0]} only, so the recommendation assumes the best alpha does not "
            f"depend on depth (published DyT results: depth barely matters). Run proxies at a second depth "
            "to check."
        )
    return out


def _evidence(
    opts: Sequence[WidthOptimum], est: dict[str, tuple[float, float, float]], factor: float, study_ids: Sequence[str]
) -> tuple[str, list[str]]:
    """("sufficient" | "insufficient", next steps). Insufficient: a 90% interval at the target spans more than
    MAX_DECADES decade(s) in either alpha, fewer than MIN_WIDTHS proxy widths ran, or a width has fewer than
    FEW_TRIALS finished trials. The steps name what to run, concretely, for every shortfall found."""
    widths = sorted({o.width for o in opts})
    wide = {p: hi / lo for p, (_, lo, hi) in est.items() if not (lo > 0 and hi / lo <= 10**MAX_DECADES)}
    few = sorted({o.width for o in opts if o.n_completed < FEW_TRIALS})
    steps = []
    if len(widths) < MIN_WIDTHS:
        steps.append(
            f"Run proxies at {MIN_WIDTHS} or more widths (proxy_widths, e.g. {[*widths, 2 * widths[-1]][-MIN_WIDTHS:]} "
            f"or wider): {len(widths)} width(s) cannot fit and check a width trend."
        )
    if few:
        steps.append(
            f"Run more trials: at widths {few} fewer than {FEW_TRIALS} trials finished; raise trials_per_width "
            "(e.g. 16, a 4x4 grid) or move the search box away from diverging/stalling alphas."
        )
    unreplicated = [o.width for o in opts if o.seed_std is None]
    noisy = [o.width for o in opts if o.snr is not None and o.snr < SNR_MIN]
    if unreplicated or noisy:
        parts = [f"seed noise is unknown at widths {unreplicated} (set replicate_best to 3)"] if unreplicated else []
        if noisy:
            parts.append(f"the alpha effect is within noise at widths {noisy} (seeds 2-3, or longer runs: tokens_per_trial)")
        steps.append("Run more seeds: " + "; ".join(parts) + ".")
    coarse = [o.width for o in opts if o.method in ("best_point", "local") and o.n_completed >= FEW_TRIALS]
    if coarse:
        steps.append(
            f"Search finer around the optimum at widths {coarse}: the fitted surface is not supported there, so "
            "the optimum is a measured point bracketed by its neighbours; a narrower box around it (or more "
            "trials) measures the region in between."
        )
    edge = sorted({o.width for o in opts if o.on_edge})
    if edge:
        steps.append(f"Widen the search box where the optimum sits on its edge (widths {edge}) and rerun.")
    if wide:
        what = ", ".join(f"{p} spans {v:.3g}x" for p, v in wide.items())
        steps.append(
            f"Add a wider proxy width (the target is {factor:.0f}x the widest, {widths[-1]}): the 90% interval at "
            f"the target is wider than one decade ({what}); wider and more proxies shorten the extrapolation."
        )
    if wide or len(widths) < MIN_WIDTHS or few:
        study = study_ids[0] if study_ids else "STUDY"
        steps.append(
            f"Check the pair directly: `alphasearch validate {study} --width {2 * widths[-1]}` trains it, (1, 1) "
            "and (0.5, 0.5) at a width larger than every proxy and reports the regret."
        )
        return "insufficient", steps
    return "sufficient", steps


def recommend(
    optima: Iterable[WidthOptimum],
    *,
    target_width: int,
    target_depth: int,
    norm: str = "dyt",
    space: SearchSpace,
    level: float = 0.9,
    study_ids: Sequence[str] = (),
    max_extrapolation: float = 64.0,
) -> Recommendation:
    """Alpha0 pair at (target_width, target_depth) with `level` intervals and warnings (DESIGN §7).

    Per parameter: the power-law prediction when its width trend is significant, otherwise the pooled
    optimum across proxy widths with an interval spanning the pooled and the power-law intervals (a
    warning shows both). `basis` records the choice; one proxy width gives that width's optimum.

        >>> rec = recommend(optima, target_width=4096, target_depth=32, space=space)  # doctest: +SKIP
        >>> json.dumps(rec.to_dict())  # doctest: +SKIP
    """
    _check_level(level)
    opts = sorted(_check_optima(optima), key=lambda o: (o.width, o.depth))
    for name, v in (("target_width", target_width), ("target_depth", target_depth)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(name, f"got {v!r}; use a positive integer")
    widths = sorted({o.width for o in opts})
    fits = fit_width_trend(opts, level=level) if len(widths) > 1 else {}
    factor = target_width / widths[-1]
    warnings = _per_width_warnings(opts, space)
    est: dict[str, tuple[float, float, float]] = {}
    basis: dict[str, str] = {}
    for param in PARAMS:
        fit = fits.get(param)
        if fit is not None and fit.significant:
            est[param], basis[param] = fit.predict(target_width, target_depth), "power_law"
            continue
        est[param] = _pooled(opts, param, target_depth, level)
        basis[param] = "single_width" if fit is None else "pooled"
        if fit is not None:
            # An undetected trend is still possible: the interval spans both readings, so it stays honest
            # when the power law holds but the proxies were too few or too noisy to show it.
            trend = fit.predict(target_width, target_depth)
            warnings.append(_no_trend_warning(fit, est[param], trend))
            est[param] = (est[param][0], min(est[param][1], trend[1]), max(est[param][2], trend[2]))
    warnings += _design_warnings(opts, fits, target_depth, factor, max_extrapolation)
    (a, a_lo, a_hi), (f, f_lo, f_hi) = est["alpha_attn"], est["alpha_ffn"]
    evidence, next_steps = _evidence(opts, est, factor, study_ids)
    return Recommendation(
        width=target_width,
        depth=target_depth,
        norm=norm,
        alpha_attn=a,
        alpha_ffn=f,
        alpha_final=f,
        interval_attn=(a_lo, a_hi),
        interval_ffn=(f_lo, f_hi),
        interval_final=(f_lo, f_hi),
        level=level,
        fits=fits,
        proxy_widths=widths,
        extrapolation_factor=factor,
        warnings=warnings,
        studies=[str(s) for s in study_ids],
        basis=basis,
        per_width=opts,
        evidence=evidence,
        next_steps=next_steps,
    )


# -------------------------------------------------------------------------------------------- heatmaps


@dataclass(frozen=True)
class HeatmapGrid:
    """A loss surface on a log-spaced grid. `loss[i, j]` is at (alpha_attn[j], alpha_ffn[i]).

    NaN marks "no value" in the arrays; `to_dict()` turns it into null.
    """

    width: int
    depth: int
    alpha_attn: np.ndarray  # (n,) x axis, log-spaced
    alpha_ffn: np.ndarray  # (n,) y axis, log-spaced
    loss: np.ndarray  # (n, n), rows = alpha_ffn
    std: np.ndarray | None  # (n, n) uncertainty of the surface, when available
    completed: list[tuple[float, float, float]]  # (alpha_attn, alpha_ffn, loss) of real trials
    diverged: list[tuple[float, float]]
    stalled: list[tuple[float, float]]
    optimum: tuple[float, float] | None  # the surrogate optimum (the star)
    extrapolated: bool = False
    label: str = ""
    surrogate: str = ""  # which model drew the surface
    value_label: str = "final val loss (nats/byte)"
    proxy_widths: list[int] = field(default_factory=list)
    space: SearchSpace | None = None  # the proxies' search box (drawn on extrapolated maps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "depth": self.depth,
            "alpha_attn": _json_array(self.alpha_attn),
            "alpha_ffn": _json_array(self.alpha_ffn),
            "loss": _json_array(self.loss),
            "std": _json_array(self.std),
            "completed": [list(map(_finite, p)) for p in self.completed],
            "diverged": [list(p) for p in self.diverged],
            "stalled": [list(p) for p in self.stalled],
            "optimum": list(self.optimum) if self.optimum else None,
            "extrapolated": self.extrapolated,
            "label": self.label,
            "surrogate": self.surrogate,
            "value_label": self.value_label,
            "proxy_widths": list(self.proxy_widths),
            "space": {"attn": list(self.space.attn), "ffn": list(self.space.ffn)} if self.space else None,
        }


def _axes(space: SearchSpace, n: int, u_lo: np.ndarray, u_hi: np.ndarray) -> tuple[np.ndarray, ...]:
    """Log-spaced axes over the box [u_lo, u_hi] -> (alpha_attn (n,), alpha_ffn (n,), grid_u (n*n, 2))."""
    if n < 2:
        raise ConfigError("n", f"got {n!r}; use at least 2 grid points per axis")
    ua, uf = np.linspace(u_lo[0], u_hi[0], n), np.linspace(u_lo[1], u_hi[1], n)
    gu = np.stack(np.meshgrid(ua, uf), -1).reshape(-1, 2)  # row-major: rows = ffn
    alphas = space.to_alpha(np.stack([ua, uf], -1))
    return alphas[:, 0], alphas[:, 1], gu


def heatmap_grid(
    points: Iterable[TrialPoint],
    *,
    space: SearchSpace,
    n: int = 25,
    surrogate: str = "gp",
    optimum: tuple[float, float] | None = None,
) -> HeatmapGrid:
    """Loss surface of one proxy (width, depth) over the search space, with the real trials on it.

    `surrogate="gp"` draws the quadratic plus a Gaussian-process fit of its residuals (follows a surface
    that is not a bowl); "quadratic" draws the quadratic fit. The star is `optimum` (pass the width's
    `WidthOptimum`, which may come from a local model or the best point), else the quadratic's minimum.
    Below 7 finished trials only the points are returned.

        >>> g = heatmap_grid(pts, space=space, n=25)  # doctest: +SKIP
        >>> g.loss.shape, g.alpha_attn[:2]  # doctest: +SKIP
    """
    if surrogate not in ("gp", "quadratic"):
        raise ConfigError("surrogate", f"got {surrogate!r}; use 'gp' or 'quadratic'")
    pts = _one_width(points)
    a_ax, f_ax, gu = _axes(space, n, np.full(2, -1.0), np.full(2, 1.0))
    u, z = _completed_uz(pts, space)
    method, coef6, _ = _surface(u, z)
    loss, std, used = np.full((n, n), np.nan), None, "none"
    if coef6 is not None:
        separable = method == "separable"
        if surrogate == "gp":
            mean, sd = gp_smooth(u, z, gu, separable=separable)
            used = f"{method} + gaussian process"
        else:
            fit = fit_lstsq(quad_features(u, separable=separable), z)
            assert fit is not None  # _surface just fitted the same design
            Fg = quad_features(gu, separable=separable)
            mean, sd, used = Fg @ fit.coef, fit.se_mean(Fg), method
        loss, std = mean.reshape(n, n), sd.reshape(n, n)
        if optimum is None:
            a_opt = space.to_alpha(quad_box_min(coef6)[0])
            optimum = (float(a_opt[0]), float(a_opt[1]))
    return HeatmapGrid(
        width=pts[0].width,
        depth=pts[0].depth,
        alpha_attn=a_ax,
        alpha_ffn=f_ax,
        loss=loss,
        std=std,
        completed=[(p.alpha_attn, p.alpha_ffn, float(p.loss or 0)) for p in pts if p.outcome == "completed"],
        diverged=[(p.alpha_attn, p.alpha_ffn) for p in pts if p.outcome == "diverged"],
        stalled=[(p.alpha_attn, p.alpha_ffn) for p in pts if p.outcome == "stalled"],
        optimum=optimum,
        label=f"width {pts[0].width}, depth {pts[0].depth}",
        surrogate=used,
        proxy_widths=[pts[0].width],
        space=space,
    )


def _stationary(coef6: np.ndarray) -> np.ndarray:
    """Unconstrained minima of quadratics (B, 6) -> (B, 2); NaN where a quadratic is not convex."""
    c1, c2, c3, c4, c5 = (coef6[:, i] for i in range(1, 6))
    det = 4 * c3 * c5 - c4 * c4
    ok = (det > 0) & (c3 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.stack([(c4 * c2 - 2 * c5 * c1) / det, (c4 * c1 - 2 * c3 * c2) / det], -1)
    return np.where(ok[:, None], u, np.nan)


def _width_aware_shapes(
    pts: Sequence[TrialPoint], space: SearchSpace, target: tuple[int, int], n_boot: int, seed: int
) -> np.ndarray:
    """Fit `WidthAwareQuadratic` to completed trials of all widths, plus `n_boot` bootstrap refits
    (trials resampled within each (width, depth), so every offset stays identifiable); returns the
    quadratic shape at the target (width, depth) of each: (1 + n_ok, 6), row 0 the fit itself."""
    keys = sorted({(p.width, p.depth) for p in pts})
    use_depth = len({k[1] for k in keys}) > 1
    t_ref = float(np.mean(np.log(sorted({k[0] for k in keys}))))
    s_ref = float(np.mean(np.log(sorted({k[1] for k in keys}))))
    u = space.to_u(np.array([[p.alpha_attn, p.alpha_ffn] for p in pts]))
    z = np.array([p.loss for p in pts], float)
    group = np.array([keys.index((p.width, p.depth)) for p in pts])
    t, s = np.log([p.width for p in pts]) - t_ref, np.log([p.depth for p in pts]) - s_ref
    F = WidthAwareQuadratic.features(u, group, t, s, n_groups=len(keys), use_depth=use_depth)
    fit = fit_lstsq(F, z) if len(z) > F.shape[1] + 2 else None
    if fit is None:
        raise AlphaSearchError(
            "Too few finished trials, or too little spread in alpha, to fit one surface across widths; "
            "run more trials per width."
        )
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(group == g) for g in range(len(keys))]
    idx = np.concatenate([rng.choice(m, size=(n_boot, len(m))) for m in members], axis=1)
    bcoef, ok = batched_lstsq(F[idx], z[idx])
    model = WidthAwareQuadratic(np.concatenate([fit.coef[None], bcoef[ok]]), len(keys), use_depth)
    return model.shape_coef(math.log(target[0]) - t_ref, math.log(target[1]) - s_ref)


def extrapolated_heatmap(
    points_all_widths: Iterable[TrialPoint],
    *,
    space: SearchSpace,
    target_width: int,
    target_depth: int,
    n: int = 25,
    n_boot: int = 100,
    seed: int = 0,
) -> HeatmapGrid:
    """Loss surface at the target width from ONE model that takes width as an input (always labelled).

    The model (`surrogate.WidthAwareQuadratic`) is a quadratic in the log alphas with one offset per
    proxy (width, depth) and linear terms that move with log width (and log depth), so its optimum moves
    as a power law. Absolute loss at the target is not predictable from proxies, so the map shows loss
    above its minimum; `std` is its bootstrap std. The axes widen beyond the search space (by at most
    one box width each side) when the extrapolated optimum lies outside it.

        >>> g = extrapolated_heatmap(trials, space=space, target_width=4096, target_depth=32)  # doctest: +SKIP
        >>> g.label  # doctest: +SKIP
        'extrapolated to width 4096 from proxy widths [64, 128, 256]'
    """
    pts = [p for p in points_all_widths if p.outcome == "completed"]
    widths = sorted({p.width for p in pts})
    if len(widths) < 2:
        raise ConfigError(
            "points_all_widths", "need finished trials at 2 or more proxy widths to extrapolate"
        )
    shapes = _width_aware_shapes(pts, space, (target_width, target_depth), n_boot, seed)
    stat = _stationary(shapes)
    boot_ok = np.isfinite(stat[1:]).all(axis=1)
    reach = np.quantile(stat[1:][boot_ok], [0.05, 0.95], axis=0) if boot_ok.any() else np.zeros((2, 2))
    u_lo = np.clip(np.fmin(np.fmin(reach[0], stat[0]) - 0.15, -1.0), -3.0, -1.0)
    u_hi = np.clip(np.fmax(np.fmax(reach[1], stat[0]) + 0.15, 1.0), 1.0, 3.0)
    a_ax, f_ax, gu = _axes(space, n, u_lo, u_hi)
    surf = quad_eval(shapes[:, None, :], gu[None])  # (1 + n_ok, n*n)
    rel = surf - surf.min(axis=1, keepdims=True)
    best = stat[0] if np.isfinite(stat[0]).all() else gu[np.argmin(surf[0])]
    return HeatmapGrid(
        width=target_width,
        depth=target_depth,
        alpha_attn=a_ax,
        alpha_ffn=f_ax,
        loss=rel[0].reshape(n, n),
        std=rel[1:].std(axis=0).reshape(n, n) if len(rel) > 2 else None,
        completed=[],
        diverged=[],
        stalled=[],
        optimum=(float(space.to_alpha(best)[0]), float(space.to_alpha(best)[1])),
        extrapolated=True,
        label=f"extrapolated to width {target_width} from proxy widths [{', '.join(map(str, widths))}]",
        surrogate="width-aware quadratic",
        value_label="predicted final val loss above its minimum (nats/byte)",
        proxy_widths=widths,
        space=space,
    )
