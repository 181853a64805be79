"""PNG rendering of loss heatmaps and of the width fit (DESIGN §6), for the CLI, the REST API and docs.

matplotlib is imported inside the functions (importing alphasearch stays fast), and figures are built
with the object API on the Agg canvas, never pyplot: no global backend switch, no shared state between
the service's threads. Colours: cividis for surfaces and Okabe-Ito accents, both colour-blind safe.

    >>> png = heatmap_png(grid, "width64.png")  # doctest: +SKIP
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"  # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from alphasearch.analysis import HeatmapGrid, Recommendation, WidthFit, WidthOptimum

DIVERGED = "#D55E00"  # Okabe-Ito vermillion
STALLED = "#CC79A7"  # Okabe-Ito reddish purple
TARGET = "#D55E00"
FIT = "#0072B2"  # Okabe-Ito blue
X_LABEL = "alpha_attn (alpha0 of the norm before attention)"
Y_LABEL = "alpha_ffn = alpha_final (alpha0 before the FFN and of the final norm)"


def _new_figure(size: tuple[float, float]) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=110, layout="constrained")


def _finish(fig: Any, path: str | Path | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _log_edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges for log-spaced centres (geometric midpoints, extended half a step at each end)."""
    lc = np.log(centres)
    mid = (lc[1:] + lc[:-1]) / 2
    return np.exp(np.concatenate([[2 * lc[0] - mid[0]], mid, [2 * lc[-1] - mid[-1]]]))


def heatmap_png(grid: HeatmapGrid, path: str | Path | None = None) -> bytes:
    """Loss surface with trials on it: circles = finished, X = diverged, triangles = stalled, star = optimum.

    Returns the PNG bytes and also writes them to `path` when one is given.
    """
    fig = _new_figure((7.0, 6.0))
    ax = fig.add_subplot()
    loss = np.ma.masked_invalid(np.asarray(grid.loss, float))
    norm = None
    if loss.count():
        mesh = ax.pcolormesh(_log_edges(grid.alpha_attn), _log_edges(grid.alpha_ffn), loss, cmap="cividis")
        norm = mesh.norm
        fig.colorbar(mesh, ax=ax).set_label(grid.value_label)
        if loss.count() == loss.size and np.ptp(loss) > 0:  # iso-loss lines help read the colour scale
            ax.contour(
                grid.alpha_attn, grid.alpha_ffn, loss, levels=7, colors="white", linewidths=0.5, alpha=0.5
            )
    if grid.completed:
        a, f, z = np.array(grid.completed, float).T
        ax.scatter(
            a,
            f,
            c=z,
            cmap="cividis",
            norm=norm,
            marker="o",
            s=36,
            edgecolors="black",
            linewidths=0.8,
            label="finished trial (fill = its loss)",
            zorder=3,
        )
    if grid.diverged:
        a, f = np.array(grid.diverged, float).T
        ax.scatter(
            a, f, marker="X", s=70, c=DIVERGED, edgecolors="black", linewidths=0.6, label="diverged", zorder=3
        )
    if grid.stalled:
        a, f = np.array(grid.stalled, float).T
        ax.scatter(
            a,
            f,
            marker="v",
            s=55,
            c=STALLED,
            edgecolors="black",
            linewidths=0.6,
            label="stalled (learned nothing)",
            zorder=3,
        )
    if grid.optimum is not None:
        ax.scatter(
            *grid.optimum,
            marker="*",
            s=380,
            c="white",
            edgecolors="black",
            linewidths=1.2,
            label="estimated optimum",
            zorder=4,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(grid.alpha_attn[0], grid.alpha_attn[-1])
    ax.set_ylim(grid.alpha_ffn[0], grid.alpha_ffn[-1])
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)
    if grid.extrapolated:
        _mark_extrapolated(fig, ax, grid)
    else:
        ax.set_title(
            f"Loss surface at proxy width {grid.width}, depth {grid.depth}\n"
            f"surrogate: {grid.surrogate or 'none (too few finished trials)'}",
            fontsize=10,
        )
    if ax.get_legend_handles_labels()[0]:  # outside the axes, so it hides no trial
        fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return _finish(fig, path)


def _mark_extrapolated(fig: Any, ax: Any, grid: HeatmapGrid) -> None:
    """Make an extrapolated map impossible to mistake for a measured one."""
    from matplotlib.patheffects import withStroke

    fig.suptitle(f"EXTRAPOLATED to width {grid.width}", fontsize=15, fontweight="bold", color=DIVERGED)
    ax.set_title(f"{grid.label}, depth {grid.depth}; no trial ran here\n{grid.surrogate}", fontsize=9)
    ax.text(
        0.5,
        0.5,
        "EXTRAPOLATED",
        transform=ax.transAxes,
        ha="center",
        va="center",
        rotation=30,
        fontsize=34,
        color="white",
        alpha=0.25,
        fontweight="bold",
        zorder=2,
    )
    if grid.space is None:
        return
    (a0, a1), (f0, f1) = grid.space.attn, grid.space.ffn
    if not np.allclose([a0, a1, f0, f1], [*grid.alpha_attn[[0, -1]], *grid.alpha_ffn[[0, -1]]]):
        ax.plot(
            [a0, a1, a1, a0, a0],
            [f0, f0, f1, f1, f0],
            ls="--",
            lw=1.2,
            c="white",
            label="proxies' search space",
            zorder=3,
            path_effects=[withStroke(linewidth=2.6, foreground="black")],  # readable on any colour
        )


def width_fit_png(
    optima: Iterable[WidthOptimum],
    fits: Mapping[str, WidthFit],
    recommendation: Recommendation,
    path: str | Path | None = None,
) -> bytes:
    """Best alpha0 vs width (log-log), one panel per parameter: per-width optima with their intervals,
    the power-law fit and its prediction band (at the target depth), and the recommendation at the target.

    Returns the PNG bytes and also writes them to `path` when one is given.
    """
    opts = sorted(optima, key=lambda o: (o.width, o.depth))
    rec = recommendation
    fig = _new_figure((11.5, 4.8))
    axes = fig.subplots(1, 2)
    widths = [o.width for o in opts] or list(rec.proxy_widths)
    ws = np.geomspace(min(widths) / 1.3, max(rec.width, max(widths)) * 1.3, 120)
    for ax, param in zip(axes, ("alpha_attn", "alpha_ffn"), strict=True):
        _width_panel(ax, param, opts, fits.get(param), rec, ws)
    fig.suptitle(
        f"Best alpha0 vs width, extrapolated to width {rec.width}, depth {rec.depth} "
        f"({rec.level:.0%} intervals)",
        fontsize=11,
    )
    return _finish(fig, path)


def _width_panel(ax: Any, param: str, opts: list, fit: WidthFit | None, rec: Recommendation, ws: Any) -> None:
    markers = iter("osD^v<>p")
    for depth in sorted({o.depth for o in opts}):
        group = [o for o in opts if o.depth == depth]
        w = np.array([o.width for o in group], float)
        v = np.array([getattr(o, param) for o in group])
        iv = np.array([o.interval_attn if param == "alpha_attn" else o.interval_ffn for o in group])
        ax.errorbar(
            w,
            v,
            yerr=[v - iv[:, 0], iv[:, 1] - v],
            fmt=next(markers),
            c="black",
            capsize=3,
            ms=5,
            label=f"per-width optimum (depth {depth})",
            zorder=3,
        )
    basis = rec.basis.get(param, "")
    if fit is not None:
        pred = np.array([fit.predict(w, rec.depth) for w in ws])
        style = "-" if fit.significant else ":"
        ax.plot(ws, pred[:, 0], style, c=FIT, label=f"power law (exponent {fit.exponent:+.2f})")
        ax.fill_between(ws, pred[:, 1], pred[:, 2], color=FIT, alpha=0.15, lw=0, label="prediction band")
    largest = max(o.width for o in opts) if opts else max(rec.proxy_widths)
    if rec.width > largest:
        ax.axvspan(largest, ws[-1], color="grey", alpha=0.08, lw=0)
        ax.text(
            largest * 1.08,
            0.97,
            "extrapolation",
            transform=ax.get_xaxis_transform(),
            va="top",
            fontsize=8,
            color="dimgrey",
        )
    centre = getattr(rec, param)
    lo, hi = rec.interval_attn if param == "alpha_attn" else rec.interval_ffn
    ax.errorbar(
        [rec.width],
        [centre],
        yerr=[[centre - lo], [hi - centre]],
        fmt="*",
        ms=15,
        c=TARGET,
        mec="black",
        capsize=4,
        label=f"recommended {centre:.3g} [{lo:.3g}, {hi:.3g}]",
        zorder=4,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model width")
    ax.set_ylabel(f"best {param}")
    if fit is None:
        head = f"{param}: one proxy width, no trend fitted"
    else:
        e_lo, e_hi = fit.exponent_interval
        head = f"{param}: exponent {fit.exponent:+.2f} [{e_lo:+.2f}, {e_hi:+.2f}]"
        head += "" if fit.significant else "\nnot significant: recommending the pooled optimum"
    ax.set_title(
        head + ("" if basis != "power_law" else f", r2 {fit.r2:.2f}" if fit and fit.r2 else ""), fontsize=10
    )
    ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
