"""alphasearch.analysis on synthetic loss surfaces whose optimum moves with width by a KNOWN power law."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest

from alphasearch.analysis import (
    SearchSpace,
    TrialPoint,
    WidthOptimum,
    extrapolated_heatmap,
    fit_width_trend,
    heatmap_grid,
    recommend,
    width_optimum,
)
from alphasearch.errors import AlphaSearchError, ConfigError

SPACE = SearchSpace(attn=(0.03, 10.0), ffn=(0.01, 5.0))
WIDTHS = (64, 128, 256, 512)
E_ATTN, E_FFN = -0.5, -0.7  # true exponents


def true_optimum(width: float, e_attn: float = E_ATTN, e_ffn: float = E_FFN) -> tuple[float, float]:
    return 1.0 * (width / 64) ** e_attn, 0.5 * (width / 64) ** e_ffn


def synth(
    seed: int,
    *,
    widths: tuple[int, ...] = WIDTHS,
    n: int = 30,
    noise: float = 0.02,
    depth: int = 4,
    e_attn: float = E_ATTN,
    e_ffn: float = E_FFN,
    shift: tuple[float, float] = (1.0, 1.0),
    grid: bool = False,
) -> list[TrialPoint]:
    """n log-uniform trials per width (with `grid`: a sqrt(n) x sqrt(n) log grid over the space); a tilted
    bowl in log alpha around the true optimum (x `shift`)."""
    rng = np.random.default_rng(seed)
    pts = []
    for w in widths:
        ta, tf = true_optimum(w, e_attn, e_ffn)
        la = rng.uniform(*np.log(SPACE.attn), n)
        lf = rng.uniform(*np.log(SPACE.ffn), n)
        if grid:
            k = math.isqrt(n)
            la, lf = (m.ravel() for m in np.meshgrid(np.linspace(*np.log(SPACE.attn), k), np.linspace(*np.log(SPACE.ffn), k)))
        da, df = la - np.log(ta * shift[0]), lf - np.log(tf * shift[1])
        loss = 3 - 0.3 * math.log(w) + 0.05 * da**2 + 0.05 * df**2 + 0.02 * da * df + rng.normal(0, noise, len(la))
        pts += [
            TrialPoint(float(np.exp(a)), float(np.exp(f)), float(z), "completed", w, depth)
            for a, f, z in zip(la, lf, loss, strict=True)
        ]
    return pts


def optima_of(pts: list[TrialPoint], seed: int = 0) -> list:
    keys = sorted({(p.width, p.depth) for p in pts})
    return [width_optimum([p for p in pts if (p.width, p.depth) == k], space=SPACE, seed=seed) for k in keys]


# ------------------------------------------------------------------------------------ per-width optimum


def test_optimum_comes_from_the_surrogate_and_its_interval_holds_the_truth():
    pts = [p for p in synth(0) if p.width == 128]
    opt = width_optimum(pts, space=SPACE)
    ta, tf = true_optimum(128)
    best = min(pts, key=lambda p: p.loss)
    assert opt.method == "quadratic" and opt.n_completed == 30 and opt.on_edge == []
    assert abs(math.log(opt.alpha_attn / ta)) < 0.15 and abs(math.log(opt.alpha_ffn / tf)) < 0.15
    assert (opt.alpha_attn, opt.alpha_ffn) != (best.alpha_attn, best.alpha_ffn)
    assert opt.interval_attn[0] <= ta <= opt.interval_attn[1]
    assert opt.interval_ffn[0] <= tf <= opt.interval_ffn[1]
    assert 0.01 < opt.residual_std < 0.03  # the 0.02 noise


def test_diverged_and_stalled_are_counted_but_kept_out_of_the_surface():
    pts = [p for p in synth(1) if p.width == 64]
    # Unstable trials with a (misleadingly low) loss: if they leaked into the fit they would move it.
    bad = [
        TrialPoint(9.0, 4.0, 0.1, "diverged", 64, 4),
        TrialPoint(8.0, 3.0, 0.1, "diverged", 64, 4),
        TrialPoint(0.04, 0.02, 0.2, "stalled", 64, 4),
        TrialPoint(0.5, 0.5, 0.0, "pruned", 64, 4),
        TrialPoint(0.6, 0.4, None, "failed", 64, 4),
    ]
    clean, mixed = width_optimum(pts, space=SPACE), width_optimum(pts + bad, space=SPACE)
    assert (mixed.alpha_attn, mixed.alpha_ffn, mixed.interval_attn) == (
        clean.alpha_attn,
        clean.alpha_ffn,
        clean.interval_attn,
    )
    assert (mixed.n_completed, mixed.n_diverged, mixed.n_stalled, mixed.n_pruned) == (30, 2, 1, 1)
    grid = heatmap_grid(pts + bad, space=SPACE, n=9)
    assert len(grid.completed) == 30
    assert sorted(grid.diverged) == [(8.0, 3.0), (9.0, 4.0)] and grid.stalled == [(0.04, 0.02)]


def test_replicated_alphas_inform_the_noise_estimate():
    rng = np.random.default_rng(2)
    grid = [(a, f) for a in (0.1, 0.3, 1.0, 3.0) for f in (0.05, 0.15, 0.5, 1.5)]
    pts = [
        TrialPoint(
            a,
            f,
            2 + 0.1 * math.log(a / 0.7) ** 2 + 0.1 * math.log(f / 0.3) ** 2 + rng.normal(0, 0.05),
            "completed",
            64,
            4,
            seed=s,
        )
        for a, f in grid
        for s in range(3)
    ]
    opt = width_optimum(pts, space=SPACE)
    assert opt.replicate_std is not None and 0.035 < opt.replicate_std < 0.065
    assert width_optimum(pts[::3], space=SPACE).replicate_std is None  # no replicates, no pure-noise estimate


def test_few_finished_trials_fall_back_and_say_so():
    pts = [p for p in synth(3) if p.width == 64]
    ta, tf = true_optimum(64)
    # 8 points of a 3 x 3 grid around the optimum: a separable fit, supported (trials sit near its minimum)
    rng = np.random.default_rng(3)
    near = [
        TrialPoint(ta * a, tf * f, 2 + 0.05 * math.log(a) ** 2 + 0.05 * math.log(f) ** 2 + rng.normal(0, 0.005),
                   "completed", 64, 4)
        for a in (0.3, 1, 3) for f in (0.3, 1, 3)
    ][:8]  # fmt: skip
    sep = width_optimum(near, space=SPACE)
    assert sep.method == "separable" and sep.method_reason is None
    assert abs(math.log(sep.alpha_attn / ta)) < 0.05 and abs(math.log(sep.alpha_ffn / tf)) < 0.05
    few = width_optimum(pts[:4], space=SPACE)
    assert few.method == "best_point" and "too few for any fit" in few.method_reason
    optima = optima_of(synth(3))
    optima[0] = width_optimum(pts[:4], space=SPACE)
    rec = recommend(optima, target_width=4096, target_depth=4, space=SPACE)
    assert any(
        "At width 64" in w and "only 4 trials finished" in w and "Run more trials" in w for w in rec.warnings
    )


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="points"):
        width_optimum([], space=SPACE)
    with pytest.raises(AlphaSearchError, match="no trial finished"):
        width_optimum([TrialPoint(1.0, 1.0, None, "diverged", 64, 4)], space=SPACE)
    with pytest.raises(ConfigError, match="several"):
        width_optimum(synth(0, widths=(64, 128)), space=SPACE)
    with pytest.raises(ConfigError, match="optima"):
        recommend([], target_width=4096, target_depth=32, space=SPACE)
    with pytest.raises(ConfigError, match="optima"):
        fit_width_trend(optima_of(synth(0, widths=(64,))))
    with pytest.raises(ConfigError, match="outcome"):
        TrialPoint(1.0, 1.0, 2.0, "crashed", 64, 4)
    with pytest.raises(ConfigError, match="loss"):
        TrialPoint(1.0, 1.0, float("nan"), "completed", 64, 4)
    with pytest.raises(ConfigError, match="space.attn"):
        SearchSpace(attn=(1.0, 0.1), ffn=(0.01, 1.0))


# ------------------------------------------------------------------------------- width trend, coverage


def test_exponent_is_recovered_within_its_interval():
    fits = fit_width_trend(optima_of(synth(4)))
    for param, true in (("alpha_attn", E_ATTN), ("alpha_ffn", E_FFN)):
        fit = fits[param]
        assert fit.exponent_interval[0] <= true <= fit.exponent_interval[1]
        assert abs(fit.exponent - true) < 0.1 and fit.significant and fit.r2 > 0.9 and fit.dof == 2


@pytest.fixture(scope="module")
def repetitions() -> list:
    """50 seeded repetitions of a whole study: 4 widths x 30 trials, recommendation at 16x width 512."""
    out = []
    for rep in range(50):
        optima = optima_of(synth(100 + rep), seed=rep)
        out.append(recommend(optima, target_width=16 * 512, target_depth=4, space=SPACE))
    return out


def test_exponent_interval_covers_the_true_exponent_at_the_nominal_rate(repetitions):
    for param, true in (("alpha_attn", E_ATTN), ("alpha_ffn", E_FFN)):
        cover = [
            r.fits[param].exponent_interval[0] <= true <= r.fits[param].exponent_interval[1]
            for r in repetitions
        ]
        assert np.mean(cover) >= 0.9, (param, np.mean(cover))
        # Coverage must not come from uselessly wide intervals: +-0.15 is tight enough to act on.
        half = np.median([np.diff(r.fits[param].exponent_interval)[0] / 2 for r in repetitions])
        assert half < 0.15, (param, half)


def test_extrapolated_alpha_at_16x_lies_in_its_interval(repetitions):
    ta, tf = true_optimum(16 * 512)
    one = repetitions[0]
    assert one.interval_attn[0] <= ta <= one.interval_attn[1]
    assert one.interval_ffn[0] <= tf <= one.interval_ffn[1]
    assert one.extrapolation_factor == 16.0 and one.basis == {
        "alpha_attn": "power_law",
        "alpha_ffn": "power_law",
    }
    assert np.mean([r.interval_attn[0] <= ta <= r.interval_attn[1] for r in repetitions]) >= 0.9
    assert np.mean([r.interval_ffn[0] <= tf <= r.interval_ffn[1] for r in repetitions]) >= 0.9


def test_flat_law_gives_no_significant_trend_and_the_pooled_optimum():
    ta, tf = true_optimum(64)  # the same at every width
    recs = [
        recommend(
            optima_of(synth(200 + rep, e_attn=0.0, e_ffn=0.0), seed=rep),
            target_width=4096,
            target_depth=4,
            space=SPACE,
        )
        for rep in range(30)
    ]
    for param, true in (("alpha_attn", ta), ("alpha_ffn", tf)):
        flat = [r for r in recs if not r.fits[param].significant]
        assert len(flat) >= 27, param  # a false trend at most as often as the 10% the level allows
        for rec in flat:
            assert rec.basis[param] == "pooled"
            assert any(
                w.startswith(f"No significant width trend for {param}") and "pooled optimum" in w
                for w in rec.warnings
            )
        lo_hi = [r.interval_attn if param == "alpha_attn" else r.interval_ffn for r in flat]
        assert np.mean([lo <= true <= hi for lo, hi in lo_hi]) >= 0.9


def test_optimum_outside_the_search_space_is_flagged_on_the_edge():
    optima = optima_of(synth(6, shift=(1.0, 0.02), n=36, grid=True))  # ffn optimum 50x below its law: < 0.01
    assert all(o.on_edge == ["alpha_ffn"] for o in optima)
    rec = recommend(optima, target_width=4096, target_depth=4, space=SPACE)
    edge = [w for w in rec.warnings if "edge of the search space" in w]
    assert len(edge) == 4 and all("alpha_ffn" in w and "Widen" in w and "below 0.01" in w for w in edge)


def test_depth_becomes_a_regressor_when_several_depths_ran():
    optima = optima_of(synth(7, depth=4) + synth(8, depth=8))
    fits = fit_width_trend(optima)
    assert fits["alpha_attn"].depth_exponent is not None and fits["alpha_attn"].n_points == 8
    assert fits["alpha_attn"].exponent_interval[0] <= E_ATTN <= fits["alpha_attn"].exponent_interval[1]
    with pytest.raises(ConfigError, match="depth"):
        fits["alpha_attn"].predict(4096)
    assert "depth_exponent" in fits["alpha_ffn"].to_dict()


# ------------------------------------------------------------------------------------- recommendation

DESIGN_KEYS = {
    "width",
    "depth",
    "norm",
    "alpha_attn",
    "alpha_ffn",
    "alpha_final",
    "interval",
    "fit",
    "proxy_widths",
    "extrapolation_factor",
    "warnings",
    "studies",
}


def test_recommendation_json_has_the_design_shape():
    rec = recommend(optima_of(synth(9)), target_width=4096, target_depth=32, space=SPACE, study_ids=["s-1"])
    d = json.loads(json.dumps(rec.to_dict(), allow_nan=False))
    assert DESIGN_KEYS <= set(d)
    assert set(d["interval"]) == {"alpha_attn", "alpha_ffn", "alpha_final", "level"}
    assert all(len(d["interval"][p]) == 2 for p in ("alpha_attn", "alpha_ffn", "alpha_final"))
    assert set(d["fit"]) == {"alpha_attn", "alpha_ffn"}
    assert all({"exponent", "exponent_interval", "r2"} <= set(d["fit"][p]) for p in d["fit"])
    assert d["alpha_final"] == d["alpha_ffn"] and d["interval"]["alpha_final"] == d["interval"]["alpha_ffn"]
    assert (d["width"], d["depth"], d["norm"], d["studies"]) == (4096, 32, "dyt", ["s-1"])
    assert d["proxy_widths"] == list(WIDTHS) and d["extrapolation_factor"] == 8.0
    assert d["interval"]["alpha_attn"][0] < d["alpha_attn"] < d["interval"]["alpha_attn"][1]


def test_one_proxy_width_falls_back_to_its_optimum_and_says_so():
    optima = optima_of(synth(10, widths=(64,)))
    rec = recommend(optima, target_width=4096, target_depth=4, space=SPACE)
    assert rec.fits == {} and rec.basis["alpha_attn"] == "single_width"
    assert rec.alpha_attn == pytest.approx(optima[0].alpha_attn)
    assert any(
        "Only one proxy width (64)" in w and "Run proxies at 3 or more widths" in w for w in rec.warnings
    )
    d = json.loads(json.dumps(rec.to_dict(), allow_nan=False))
    assert d["fit"]["alpha_attn"]["exponent"] is None


def test_far_extrapolation_two_widths_and_one_depth_are_warned():
    rec = recommend(optima_of(synth(11, widths=(64, 128))), target_width=65536, target_depth=32, space=SPACE)
    text = " ".join(rec.warnings)
    assert "512x the largest proxy width (128)" in text and "beyond the 64x" in text
    assert "Only 2 proxy widths" in text and "depth 4 only" in text


# ------------------------------------------------------------------------------------------- heatmaps


def test_heatmap_grid_is_log_spaced_over_the_space_and_serialisable():
    grid = heatmap_grid([p for p in synth(12) if p.width == 64], space=SPACE, n=21)
    assert grid.loss.shape == (21, 21) and grid.std is not None and grid.std.shape == (21, 21)
    for axis, (lo, hi) in ((grid.alpha_attn, SPACE.attn), (grid.alpha_ffn, SPACE.ffn)):
        assert axis.shape == (21,) and axis[0] == pytest.approx(lo) and axis[-1] == pytest.approx(hi)
        assert np.allclose(np.diff(np.log(axis)), np.log(hi / lo) / 20)
    assert not grid.extrapolated and grid.width == 64 and np.isfinite(grid.loss).all()
    i, j = np.unravel_index(np.argmin(grid.loss), grid.loss.shape)  # rows are alpha_ffn
    ta, tf = true_optimum(64)
    assert abs(math.log(grid.alpha_attn[j] / ta)) < 0.5 and abs(math.log(grid.alpha_ffn[i] / tf)) < 0.5
    json.dumps(grid.to_dict(), allow_nan=False)
    sparse = heatmap_grid([p for p in synth(12) if p.width == 64][:3], space=SPACE, n=5)
    assert sparse.to_dict()["loss"][0] == [None] * 5 and sparse.optimum is None


def test_extrapolated_heatmap_is_labelled_and_finds_the_target_optimum():
    grid = extrapolated_heatmap(synth(13), space=SPACE, target_width=4096, target_depth=4, n=15)
    assert grid.extrapolated and grid.width == 4096 and grid.loss.shape == (15, 15)
    assert grid.label == "extrapolated to width 4096 from proxy widths [64, 128, 256, 512]"
    assert grid.std is not None and grid.std.shape == (15, 15) and np.nanmin(grid.loss) == 0.0
    ta, tf = true_optimum(4096)
    assert abs(math.log(grid.optimum[0] / ta)) < 0.3 and abs(math.log(grid.optimum[1] / tf)) < 0.3
    assert np.allclose(np.diff(np.log(grid.alpha_attn)), np.diff(np.log(grid.alpha_attn))[0])
    json.dumps(grid.to_dict(), allow_nan=False)
    with pytest.raises(ConfigError, match="2 or more proxy widths"):
        extrapolated_heatmap(synth(13, widths=(64,)), space=SPACE, target_width=4096, target_depth=4)


def test_extrapolated_heatmap_widens_its_axes_to_show_an_optimum_outside_the_space():
    grid = extrapolated_heatmap(synth(14), space=SPACE, target_width=65536, target_depth=4, n=11)
    tf = true_optimum(65536)[1]  # ~0.004, below the 0.01 bound
    assert grid.alpha_ffn[0] < tf < SPACE.ffn[0]
    assert grid.alpha_ffn[0] < grid.optimum[1] < SPACE.ffn[0]


def test_a_surface_that_is_not_a_bowl_is_flagged():
    """Steeper walls above the optimum than below bias a quadratic's minimum; the user must hear it."""
    rng = np.random.default_rng(15)
    la, lf = rng.uniform(*np.log(SPACE.attn), 30), rng.uniform(*np.log(SPACE.ffn), 30)
    da, df = la - math.log(0.5), lf - math.log(0.2)
    loss = 2 + 0.05 * (da**2 + df**2) + 0.03 * np.maximum(da, 0) ** 3 + rng.normal(0, 0.02, 30)
    pts = [
        TrialPoint(float(np.exp(a)), float(np.exp(f)), float(z), "completed", 64, 4)
        for a, f, z in zip(la, lf, loss, strict=True)
    ]
    lopsided = width_optimum(pts, space=SPACE)
    # 60 trials: dense enough that some land near each bowl's minimum. With 30 random trials over these
    # 2.5 decades a bowl's minimum is often 2+ noise stds below every trial, and is then (rightly) not
    # reported as measured; that is tested below.
    bowls = optima_of(synth(15, n=60))
    assert lopsided.lack_of_fit > 6 and all(o.lack_of_fit < 6 for o in bowls)
    # The quadratic's minimum is not used: a local model around the best point (or that point) is.
    assert lopsided.method in ("local", "best_point") and "smoother model" in lopsided.method_reason
    assert all(o.method == "quadratic" for o in bowls)
    rec = recommend([lopsided, *bowls[1:]], target_width=4096, target_depth=4, space=SPACE)
    assert [w for w in rec.warnings if w.startswith("At width 64 (depth 4) the quadratic surface is not supported")]
    # Clean bowls earn no warning but the one about seed noise: synth() runs every point once.
    clean = recommend(bowls, target_width=4096, target_depth=4, space=SPACE).warnings
    assert [w for w in clean if not w.startswith("No replicates at width")] == []
    assert len(clean) == len(WIDTHS)


# ------------------------------------------------------------------------------ noise and the baseline


def replicated(noise: float, *, seed: int = 16, width: int = 64, depth: int = 4, seeds: int = 3) -> list[TrialPoint]:
    """A 4 x 4 log grid, every point run with `seeds` seeds: a bowl whose loss spans ~0.3 nats over the
    grid (minimum 2.0 at the grid's centre), plus seed noise of std `noise`."""
    rng = np.random.default_rng(seed)
    grid = [(a, f) for a in (0.1, 0.3, 1.0, 3.0) for f in (0.05, 0.15, 0.5, 1.5)]
    return [
        TrialPoint(
            a, f, 2 + 0.05 * math.log(a / 0.55) ** 2 + 0.05 * math.log(f / 0.27) ** 2 + rng.normal(0, noise),
            "completed", width, depth, seed=s,
        )  # fmt: skip
        for a, f in grid
        for s in range(seeds)
    ]


def test_seed_noise_that_swamps_the_alpha_effect_is_warned_and_small_noise_is_not():
    quiet = width_optimum(replicated(0.005), space=SPACE)
    loud = width_optimum(replicated(0.3), space=SPACE)
    for opt, noise in ((quiet, 0.005), (loud, 0.3)):
        assert opt.n_replicated == 16
        assert 0.7 * noise < opt.seed_std < 1.3 * noise  # 32 residual dof: within 30% of the true std
        assert opt.snr == pytest.approx(opt.alpha_effect / opt.seed_std)
    assert 0.25 < quiet.alpha_effect < 0.4  # the bowl's own spread over the grid (~0.31)
    assert quiet.snr > 30 and loud.snr < 3
    warned = [w for w in recommend([loud], target_width=4096, target_depth=4, space=SPACE).warnings
              if w.startswith("Alpha effect within noise")]  # fmt: skip
    assert len(warned) == 1
    assert re.match(r"Alpha effect within noise at width 64 \(SNR \d\.\d < 3\)", warned[0])
    assert f"SNR {loud.snr:.1f} < 3" in warned[0]
    quiet_warnings = recommend([quiet], target_width=4096, target_depth=4, space=SPACE).warnings
    assert not [w for w in quiet_warnings if "within noise" in w or "No replicates" in w]


def test_no_replicates_means_seed_noise_unknown_and_is_said():
    once = width_optimum(replicated(0.005, seeds=1), space=SPACE)
    assert once.seed_std is None and once.snr is None and once.n_replicated == 0
    assert once.alpha_effect is not None  # the effect is still measured; only the noise is missing
    warnings = recommend([once], target_width=4096, target_depth=4, space=SPACE).warnings
    assert [w for w in warnings if w.startswith("No replicates at width 64: seed noise unknown")]
    assert not [w for w in warnings if "within noise" in w]


def test_dyt_trailing_rmsnorm_by_more_than_5_percent_is_warned():
    pts = replicated(0.005)
    behind = width_optimum(pts, space=SPACE, baseline=[1.85, 1.87])
    close = width_optimum(pts, space=SPACE, baseline=[1.97, 1.99])
    alone = width_optimum(pts, space=SPACE)
    by_point: dict[tuple[float, float], list[float]] = {}
    for p in pts:
        by_point.setdefault((p.alpha_attn, p.alpha_ffn), []).append(p.loss)
    best_mean = min(np.mean(v) for v in by_point.values())
    assert behind.best_mean_loss == pytest.approx(best_mean) and behind.rmsnorm_loss == pytest.approx(1.86)
    assert behind.dyt_vs_rmsnorm_gap == pytest.approx((best_mean - 1.86) / 1.86)
    assert 0.05 < behind.dyt_vs_rmsnorm_gap < 0.1 and 0 < close.dyt_vs_rmsnorm_gap < 0.05
    assert alone.rmsnorm_loss is None and alone.dyt_vs_rmsnorm_gap is None

    def gap_warnings(opt: WidthOptimum) -> list[str]:
        rec = recommend([opt], target_width=4096, target_depth=4, space=SPACE)
        return [w for w in rec.warnings if "trails RMSNorm" in w]

    [warned] = gap_warnings(behind)
    assert warned.startswith(f"DyT trails RMSNorm by {behind.dyt_vs_rmsnorm_gap:.1%} at width 64")
    assert gap_warnings(close) == [] and gap_warnings(alone) == []


def test_a_high_stall_rate_is_counted_and_warned_per_width():
    pts = replicated(0.005, seeds=1)
    stalled = [TrialPoint(0.04, f, None, "stalled", 64, 4) for f in (0.02, 0.05, 0.1, 0.2, 0.4)]
    few = width_optimum(pts + stalled[:1], space=SPACE)
    many = width_optimum(pts + stalled, space=SPACE)
    assert few.stall_rate == pytest.approx(1 / 17) and many.stall_rate == pytest.approx(5 / 21)

    def stall_warnings(opt: WidthOptimum) -> list[str]:
        return [w for w in recommend([opt], target_width=4096, target_depth=4, space=SPACE).warnings if "stalled (" in w]

    assert stall_warnings(few) == []
    [warned] = stall_warnings(many)
    assert warned.startswith("5 of 21 runs stalled (24%) at width 64")


def test_noise_fields_reach_the_json_and_load_back_as_the_service_stores_them():
    """The service keeps `WidthOptimum.to_dict()` and rebuilds optima from its dataclass fields (pooled
    recommendations): the noise numbers and their warnings must survive that round trip."""
    opts = [
        width_optimum(replicated(0.3, seed=17, width=64), space=SPACE, baseline=[1.6, 1.62]),
        width_optimum(replicated(0.005, seed=18, width=128), space=SPACE, baseline=[1.99]),
    ]
    rec = recommend(opts, target_width=4096, target_depth=4, space=SPACE)
    d = json.loads(json.dumps(rec.to_dict(), allow_nan=False))
    for row, opt in zip(d["per_width"], opts, strict=True):
        for key in ("seed_std", "alpha_effect", "snr", "dyt_vs_rmsnorm_gap", "rmsnorm_loss", "stall_rate"):
            assert row[key] == pytest.approx(getattr(opt, key)), key
    known = {f.name for f in dataclasses.fields(WidthOptimum)}
    again = [
        WidthOptimum(**{
            **{k: v for k, v in row.items() if k in known},
            "interval_attn": tuple(row["interval_attn"]), "interval_ffn": tuple(row["interval_ffn"]),
        })
        for row in d["per_width"]
    ]  # fmt: skip
    assert [o.snr for o in again] == pytest.approx([o.snr for o in opts])
    assert recommend(again, target_width=4096, target_depth=4, space=SPACE).warnings == rec.warnings
    assert any(w.startswith("Alpha effect within noise at width 64") for w in rec.warnings)
    assert any(w.startswith("DyT trails RMSNorm by") and "at width 64" in w for w in rec.warnings)
    noise_or_gap = ("Alpha effect within noise", "No replicates", "DyT trails RMSNorm")
    assert not any("width 128" in w for w in rec.warnings if w.startswith(noise_or_gap))


# ------------------------------------------------------------------------------ an honest optimum


def three_level(seeds: int = 3, noise: float = 0.003, seed: int = 19) -> list[TrialPoint]:
    """The issue-14 artefact: a 3 x 3 grid whose two lower alpha_ffn levels tie (a plateau, then a cliff at
    the top level). The parabola through three levels puts its vertex between the tied levels, at a loss
    no trial measured. Every point runs `seeds` paired seeds."""
    rng = np.random.default_rng(seed)
    ffn_loss = {0.02: 0.0, 0.28: 0.0, 4.0: 0.4}
    return [
        TrialPoint(a, f, 2 + 0.1 * math.log(a / 0.45) ** 2 + df + rng.normal(0, noise), "completed", 64, 4, seed=s)
        for a in (0.05, 0.45, 4.0) for f, df in ffn_loss.items() for s in range(seeds)
    ]  # fmt: skip


def test_a_vertex_far_below_every_measured_point_falls_back_to_a_measured_point():
    space = SearchSpace(attn=(0.05, 4.0), ffn=(0.02, 4.0))
    opt = width_optimum(three_level(), space=space)
    best_mean = opt.best_mean_loss
    # The quadratic alone would claim ~0.05 nats below anything measured, 10+ seed stds.
    assert opt.quadratic_loss < best_mean - 10 * opt.seed_std
    assert opt.method == "best_point" and "below the best measured mean" in opt.method_reason
    assert opt.predicted_loss >= best_mean - opt.noise * math.sqrt(2)
    measured = {(p.alpha_attn, p.alpha_ffn) for p in three_level()}
    assert (round(opt.alpha_attn, 9), round(opt.alpha_ffn, 9)) in {(round(a, 9), round(f, 9)) for a, f in measured}
    assert opt.alpha_attn == pytest.approx(0.45)
    # The interval brackets both tied ffn levels (neither is measurably better) up to their neighbours.
    assert opt.interval_ffn[0] == pytest.approx(0.02) and opt.interval_ffn[1] > 0.28
    assert opt.to_dict()["method"] == "best_point" and opt.to_dict()["method_reason"]


def test_lack_of_fit_against_replicate_noise_is_tested():
    """A V-shaped valley (|log alpha|) is no bowl: with replicates the F test rejects the quadratic; a true
    bowl passes it."""
    rng = np.random.default_rng(20)
    grid = [(a, f) for a in (0.06, 0.2, 0.6, 2.0) for f in (0.03, 0.1, 0.3, 1.0)]

    def pts(shape, ca, cf):  # noqa: ANN001, ANN202
        return [
            TrialPoint(a, f, 2 + shape(math.log(a / ca)) + shape(math.log(f / cf)) + rng.normal(0, 0.004),
                       "completed", 64, 4, seed=s)
            for a, f in grid for s in range(3)
        ]  # fmt: skip

    # Off the grid's centre (4 levels symmetric about the valley could not tell |x| from x^2); the bowl's
    # minimum on a grid point, so that the trials measure it.
    vee = width_optimum(pts(lambda x: 0.15 * abs(x), 0.25, 0.12), space=SPACE)
    bowl = width_optimum(pts(lambda x: 0.1 * x * x, 0.2, 0.1), space=SPACE)
    assert vee.lack_of_fit_p is not None and vee.lack_of_fit_p < 0.01
    assert vee.method in ("local", "best_point") and "lack-of-fit test" in vee.method_reason
    assert bowl.lack_of_fit_p > 0.01 and bowl.method == "quadratic" and bowl.method_reason is None


def test_paired_seeds_give_the_noise_of_a_difference():
    """Each seed shifts the loss of EVERY alpha point alike (+-0.05, same init and data order), plus a small
    point-by-seed noise (0.004). The seed std sees both; the std of a difference under paired seeds only
    sqrt(2) x the small one, which is what decides whether one alpha beats another."""
    rng = np.random.default_rng(21)
    seed_shift = {0: -0.05, 1: 0.0, 2: 0.05, 3: 0.03}
    pts = [
        TrialPoint(a, f, 2 + 0.05 * math.log(a / 0.55) ** 2 + 0.05 * math.log(f / 0.27) ** 2 + seed_shift[s]
                   + rng.normal(0, 0.004), "completed", 64, 4, seed=s)
        for a in (0.1, 0.3, 1.0, 3.0) for f in (0.05, 0.15, 0.5, 1.5) for s in seed_shift
    ]  # fmt: skip
    opt = width_optimum(pts, space=SPACE)
    assert opt.seed_std > 0.03  # the shared seed effect dominates the plain replicate spread
    assert 0.7 * 0.004 * math.sqrt(2) < opt.diff_std < 1.3 * 0.004 * math.sqrt(2)
    assert opt.to_dict()["diff_std"] == pytest.approx(opt.diff_std)
    # Only one replicated point (the quick preset's replicate_best): no pair to difference.
    single = [p for p in pts if p.seed == 0 or (p.alpha_attn, p.alpha_ffn) == (0.3, 0.15)]
    assert width_optimum(single, space=SPACE).diff_std is None


# --------------------------------------------------------------------- evidence a user can act on


def test_evidence_is_sufficient_only_for_an_interval_within_a_decade():
    rec = recommend(optima_of(synth(22, n=60)), target_width=1024, target_depth=4, space=SPACE, study_ids=["s-9"])
    d = json.loads(json.dumps(rec.to_dict(), allow_nan=False))
    for p in ("alpha_attn", "alpha_ffn"):
        lo, hi = d["interval"][p]
        assert hi / lo <= 10, (p, lo, hi)
    assert d["evidence"] == "sufficient"


def test_insufficient_evidence_names_what_to_run():
    # Two proxy widths, 8 finished trials each, no replicates, target 256x the widest proxy.
    pts = [p for p in synth(23, widths=(32, 64), n=8)]
    rec = recommend(optima_of(pts), target_width=16384, target_depth=4, space=SPACE, study_ids=["s-1"])
    d = json.loads(json.dumps(rec.to_dict(), allow_nan=False))
    assert d["evidence"] == "insufficient"
    assert np.isfinite(d["alpha_attn"]) and np.isfinite(d["alpha_ffn"])  # the point values stay in the JSON
    steps = " | ".join(d["next_steps"])
    assert "3 or more widths" in steps and "proxy_widths" in steps
    assert "Run more trials: at widths [32, 64]" in steps and "trials_per_width" in steps
    assert "Run more seeds" in steps and "replicate_best" in steps
    assert "alphasearch validate s-1 --width 128" in steps
    wide = max(d["interval"][p][1] / d["interval"][p][0] for p in ("alpha_attn", "alpha_ffn"))
    assert wide > 10 and "wider than one decade" in steps
