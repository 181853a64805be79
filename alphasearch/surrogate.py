"""Loss-surface models over (log alpha_attn, log alpha_ffn), used by `alphasearch.analysis`.

Split out of analysis.py because it is its own idea: HOW final val loss is modelled as a function of the
alphas (and of width), while analysis.py decides WHAT to conclude from the models (per-width optima,
the width trend, the recommendation, heatmap grids). Pure numpy.

Every model works in box coordinates `u = (log alpha - centre) / half_range`, so the search space is
[-1, 1]^2 and the normal equations stay well conditioned whatever the alpha units.

Models:
- `quadratic`: loss = c0 + c1 x + c2 y + c3 x^2 + c4 xy + c5 y^2 (least squares). Its box-constrained
  minimum is exact (`quad_box_min`), and refitting it is cheap enough to bootstrap.
- `separable`: the same without the xy term, for when too few trials finished for six coefficients.
- `local`: the same quadratic, weighted by a Gaussian kernel around one point (the best measured one), for
  when the global quadratic does not fit: it only has to describe the neighbourhood of the optimum.
- `gp_smooth`: the quadratic plus a Gaussian-process fit of its residuals, for display only: it follows
  a loss surface that is not a bowl, and falls back to the quadratic where the data say nothing more.
- `WidthAwareQuadratic`: one quadratic over all proxy widths whose linear terms move linearly with
  log width (and log depth), so its optimum moves as a power law of width; per-(width, depth) offsets.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> u = rng.uniform(-1, 1, (40, 2))
    >>> z = (u[:, 0] - 0.3) ** 2 + (u[:, 1] + 0.2) ** 2
    >>> fit = fit_lstsq(quad_features(u), z)
    >>> np.round(quad_box_min(fit.coef)[0], 3)
    array([ 0.3, -0.2])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUAD_TERMS = 6  # c0, x, y, x^2, xy, y^2
SEPARABLE_TERMS = 5  # the same without xy
_RANK_TOL = 1e-10  # smallest/largest eigenvalue of F'F below which a design is treated as singular


def quad_features(u: np.ndarray, *, separable: bool = False) -> np.ndarray:
    """Design matrix (n, 6) [1, x, y, x^2, xy, y^2], or (n, 5) without xy when `separable`."""
    x, y = u[..., 0], u[..., 1]
    cols = [np.ones_like(x), x, y, x * x] + ([] if separable else [x * y]) + [y * y]
    return np.stack(cols, axis=-1)


def full_coef(coef: np.ndarray, *, separable: bool) -> np.ndarray:
    """Six quadratic coefficients from either model (inserts a zero xy term for the separable one)."""
    if not separable:
        return coef
    return np.concatenate([coef[..., :4], np.zeros_like(coef[..., :1]), coef[..., 4:]], axis=-1)


@dataclass(frozen=True)
class LstsqFit:
    """A least-squares fit: coefficients, residual std (None without residual dof), (F'F)^-1."""

    coef: np.ndarray
    resid_std: float | None
    xtx_inv: np.ndarray

    def se_mean(self, F: np.ndarray) -> np.ndarray:
        """Standard error of the fitted mean at the rows of F (0 when the noise is unknown)."""
        s = self.resid_std or 0.0
        return s * np.sqrt(np.maximum(np.einsum("np,pq,nq->n", F, self.xtx_inv, F), 0.0))


def fit_lstsq(F: np.ndarray, z: np.ndarray) -> LstsqFit | None:
    """Ordinary least squares of z on F; None when F is (numerically) rank deficient."""
    xtx = F.T @ F
    eig = np.linalg.eigvalsh(xtx)
    if eig[0] <= _RANK_TOL * max(eig[-1], 1e-300):
        return None
    coef = np.linalg.solve(xtx, F.T @ z)
    dof = len(z) - F.shape[1]
    resid = z - F @ coef
    resid_std = float(np.sqrt(resid @ resid / dof)) if dof > 0 else None
    return LstsqFit(coef, resid_std, np.linalg.inv(xtx))


def batched_lstsq(F: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares for a stack of designs F (B, n, p), z (B, n) -> (coef (B, p), ok (B,))."""
    xtx = np.einsum("bnp,bnq->bpq", F, F)
    eig = np.linalg.eigvalsh(xtx)
    ok = eig[:, 0] > _RANK_TOL * np.maximum(eig[:, -1], 1e-300)
    xtx[~ok] += np.eye(F.shape[2])  # keep solve() from failing; those rows are discarded by the caller
    coef = np.linalg.solve(xtx, np.einsum("bnp,bn->bp", F, z)[..., None])[..., 0]
    return coef, ok


def quad_eval(coef6: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Value of the quadratic(s) coef6 (..., 6) at points u (..., 2)."""
    return np.sum(quad_features(u) * coef6, axis=-1)


def quad_box_min(
    coef6: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimum of each quadratic coef6 (B, 6) or (6,) over the box [lo, hi] (default [-1, 1]^2).

    The minimum of a 2-D quadratic over a box is the interior stationary point (if the quadratic is
    convex there), or the minimum of a 1-D quadratic along one of the four edges, or a corner; all are
    evaluated and the best is kept. Returns (argmin (B, 2), value (B,)), without the batch axis for (6,).
    """
    c = np.atleast_2d(coef6)
    lo = np.array([-1.0, -1.0]) if lo is None else np.asarray(lo, float)
    hi = np.array([1.0, 1.0]) if hi is None else np.asarray(hi, float)
    c1, c2, c3, c4, c5 = (c[:, i] for i in range(1, 6))
    cands = []
    det = 4 * c3 * c5 - c4 * c4
    with np.errstate(divide="ignore", invalid="ignore"):
        xs, ys = (c4 * c2 - 2 * c5 * c1) / det, (c4 * c1 - 2 * c3 * c2) / det
    convex = (det > 0) & (c3 > 0)
    inside = convex & (xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1]) & (ys <= hi[1])
    cands.append(np.where(inside[:, None], np.stack([xs, ys], -1), np.nan))
    for xb in (lo[0], hi[0]):  # edges x = const: minimise over y
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(c5 > 0, -(c2 + c4 * xb) / (2 * c5), lo[1])
        cands.append(np.stack([np.full_like(y, xb), np.clip(y, lo[1], hi[1])], -1))
    for yb in (lo[1], hi[1]):  # edges y = const: minimise over x
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(c3 > 0, -(c1 + c4 * yb) / (2 * c3), lo[0])
        cands.append(np.stack([np.clip(x, lo[0], hi[0]), np.full_like(x, yb)], -1))
    for xb in (lo[0], hi[0]):
        for yb in (lo[1], hi[1]):
            cands.append(np.tile([xb, yb], (len(c), 1)))
    pts = np.stack(cands, axis=1)  # (B, K, 2)
    vals = quad_eval(c[:, None, :], np.nan_to_num(pts, nan=0.0))
    vals = np.where(np.isnan(pts[..., 0]), np.inf, vals)
    k = np.argmin(vals, axis=1)
    best, val = pts[np.arange(len(c)), k], vals[np.arange(len(c)), k]
    return (best[0], val[0]) if np.ndim(coef6) == 1 else (best, val)


def bootstrap_argmin(
    u: np.ndarray, z: np.ndarray, *, method: str, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Box minima of the surrogate refitted to `n_boot` case-bootstrap resamples -> (B_ok, 2).

    Resampling whole trials keeps replicated alphas (several seeds) together with their scatter, so the
    noise they reveal widens the interval as it should. Singular resamples are dropped.
    """
    idx = rng.integers(0, len(z), size=(n_boot, len(z)))
    if method == "best_trial":
        return u[idx[np.arange(n_boot), np.argmin(z[idx], axis=1)]]
    separable = method == "separable"
    coef, ok = batched_lstsq(quad_features(u[idx], separable=separable), z[idx])
    return quad_box_min(full_coef(coef[ok], separable=separable))[0]


def local_weights(u: np.ndarray, centre: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian kernel weights of the points u (..., 2) around `centre` (2,), in box units."""
    return np.exp(-0.5 * np.sum((u - centre) ** 2, axis=-1) / bandwidth**2)


def fit_local(u: np.ndarray, z: np.ndarray, centre: np.ndarray, bandwidth: float) -> LstsqFit | None:
    """Kernel-weighted quadratic around `centre` (weighted least squares); None when singular.

    Its `resid_std` is of the weighted residuals, not a noise estimate; only `coef` is used."""
    sw = np.sqrt(local_weights(u, centre, bandwidth))
    return fit_lstsq(quad_features(u) * sw[:, None], z * sw)


def bootstrap_local_argmin(
    u: np.ndarray,
    z: np.ndarray,
    *,
    centre: np.ndarray,
    bandwidth: float,
    lo: np.ndarray,
    hi: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Minima over [lo, hi] of the local quadratic refitted to `n_boot` case-bootstrap resamples -> (B_ok, 2)."""
    idx = rng.integers(0, len(z), size=(n_boot, len(z)))
    sw = np.sqrt(local_weights(u, centre, bandwidth))[idx]
    coef, ok = batched_lstsq(quad_features(u[idx]) * sw[..., None], z[idx] * sw)
    return quad_box_min(coef[ok], lo, hi)[0]


@dataclass(frozen=True)
class GPResiduals:
    """A quadratic trend plus a Gaussian process on its residuals (squared-exponential kernel).

    `lack_of_fit` = 2 x (log marginal likelihood of the best GP - that of pure noise): near 0 when the
    quadratic explains the surface (99th percentile ~3 in our simulations of quadratic bowls), large
    when the residuals have structure, i.e. the surface is not a bowl in log alpha.
    """

    trend: LstsqFit
    separable: bool
    u: np.ndarray
    resid: np.ndarray
    total: float  # residual variance, split into signal (share) and noise (1 - share)
    share: float
    ell: float  # kernel length scale, box units
    lack_of_fit: float

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.total * self.share * np.exp(-0.5 * np.sum((a[:, None] - b[None]) ** 2, -1) / self.ell**2)

    def predict(self, grid_u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of the mean surface at grid_u (m, 2): trend-coefficient error plus GP posterior."""
        Fg = quad_features(grid_u, separable=self.separable)
        mean, var = Fg @ self.trend.coef, self.trend.se_mean(Fg) ** 2
        if self.share > 0:
            K = self._kernel(self.u, self.u) + self.total * (1 - self.share) * np.eye(len(self.u))
            ks = self._kernel(grid_u, self.u)
            mean = mean + ks @ np.linalg.solve(K, self.resid)
            var = var + np.maximum(
                self.total * self.share - np.einsum("mn,nm->m", ks, np.linalg.solve(K, ks.T)), 0
            )
        return mean, np.sqrt(var)


def gp_residuals(u: np.ndarray, z: np.ndarray, *, separable: bool = False) -> GPResiduals:
    """Fit the quadratic, then pick the GP's length scale and signal share on its residuals by marginal
    likelihood over a small grid (share 0 = no GP = the plain quadratic)."""
    F = quad_features(u, separable=separable)
    trend = fit_lstsq(F, z)
    if trend is None:
        raise ValueError("quadratic trend is singular")
    r = z - F @ trend.coef
    total = max(float(r @ r) / max(len(z) - F.shape[1], 1), 1e-12)
    d2 = np.sum((u[:, None] - u[None]) ** 2, -1)
    lls = {}
    for ell in (0.15, 0.25, 0.4, 0.6, 1.0):
        for share in (0.0, 0.3, 0.6, 0.85, 0.95):
            K = total * (share * np.exp(-0.5 * d2 / ell**2) + (1 - share) * np.eye(len(z)))
            L = np.linalg.cholesky(K)
            a = np.linalg.solve(L, r)
            lls[(ell, share)] = -0.5 * a @ a - np.log(np.diag(L)).sum()
    (ell, share), best = max(lls.items(), key=lambda kv: kv[1])
    return GPResiduals(trend, separable, u, r, total, share, ell, float(2 * (best - lls[(1.0, 0.0)])))


def gp_smooth(
    u: np.ndarray, z: np.ndarray, grid_u: np.ndarray, *, separable: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Quadratic trend + GP on its residuals, evaluated at grid_u (m, 2) -> (mean (m,), std (m,)).

    `std` is the uncertainty of the mean surface, not of a single new trial.
    """
    return gp_residuals(u, z, separable=separable).predict(grid_u)


@dataclass(frozen=True)
class WidthAwareQuadratic:
    """loss = offset[group] + quadratic(u) whose linear terms shift with t = log width (and s = log depth).

    With H the (constant) curvature, the optimum is u*(t, s) = -H^-1 (g0 + g_t t + g_s s): linear in
    log width, i.e. a power law in alpha units. `coef` = [offsets..., c1, c2, c3, c4, c5, g_t(2), g_s(2)?].
    """

    coef: np.ndarray
    n_groups: int
    use_depth: bool

    @staticmethod
    def features(
        u: np.ndarray, group: np.ndarray, t: np.ndarray, s: np.ndarray, *, n_groups: int, use_depth: bool
    ) -> np.ndarray:
        x, y = u[..., 0], u[..., 1]
        onehot = (group[..., None] == np.arange(n_groups)).astype(float)
        cols = [x, y, x * x, x * y, y * y, t * x, t * y] + ([s * x, s * y] if use_depth else [])
        return np.concatenate([onehot, np.stack(cols, -1)], axis=-1)

    def shape_coef(self, t: float, s: float) -> np.ndarray:
        """Six quadratic coefficients (c0 = 0) of the surface at log width t, log depth s."""
        c = self.coef[..., self.n_groups :]
        g1 = c[..., 0] + c[..., 5] * t + (c[..., 7] * s if self.use_depth else 0.0)
        g2 = c[..., 1] + c[..., 6] * t + (c[..., 8] * s if self.use_depth else 0.0)
        return np.stack([np.zeros_like(g1), g1, g2, c[..., 2], c[..., 3], c[..., 4]], axis=-1)
