"""alphasearch.backtest: the leave-widest-out backtest on synthetic trials whose optimum moves as a known
power law of width (pure analysis: nothing trains)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alphasearch.analysis import SearchSpace, TrialPoint, recommend, width_optimum
from alphasearch.backtest import leave_widest_out

SPACE = SearchSpace(attn=(0.05, 4.0), ffn=(0.02, 4.0))


def true_optimum(width: int) -> tuple[float, float]:
    return 8 * width**-0.5, 6 * width**-0.6


def trials(width: int, *, seeds: int = 2, noise: float = 0.002, seed: int = 0) -> list[TrialPoint]:
    """A 5 x 5 log grid over the box, `seeds` seeds each, loss a bowl in log alpha around true_optimum."""
    rng = np.random.default_rng(seed + width)
    a0, f0 = true_optimum(width)
    out = []
    for a in np.geomspace(*SPACE.attn, 5):
        for f in np.geomspace(*SPACE.ffn, 5):
            for s in range(seeds):
                loss = 2 + 0.1 * math.log(a / a0) ** 2 + 0.15 * math.log(f / f0) ** 2 + rng.normal(0, noise)
                out.append(TrialPoint(float(a), float(f), loss, "completed", width=width, depth=4, seed=s))
    return out


def run(widths: list[int]) -> dict:
    points = [p for w in widths for p in trials(w)]
    optima = [width_optimum([p for p in points if p.width == w], space=SPACE) for w in widths]
    return leave_widest_out(points, optima, space=SPACE)


def test_the_widest_width_is_predicted_from_the_others_and_its_regret_is_reported() -> None:
    bt = run([32, 64, 128, 256])
    assert bt["status"] == "ok" and bt["held_out_width"] == 256 and bt["fitted_widths"] == [32, 64, 128]
    # The prediction is exactly what the recommendation's own analysis gives from the narrower widths (how
    # accurate that analysis is, is the analysis's business: tests/alphasearch/test_analysis.py).
    points = [p for w in (32, 64, 128, 256) for p in trials(w)]
    rest = [width_optimum([p for p in points if p.width == w], space=SPACE) for w in (32, 64, 128)]
    expected = recommend(rest, target_width=256, target_depth=4, space=SPACE)
    assert bt["predicted"] == pytest.approx({"alpha_attn": expected.alpha_attn, "alpha_ffn": expected.alpha_ffn})
    held = width_optimum([p for p in points if p.width == 256], space=SPACE)
    assert bt["log2_ratio"]["alpha_attn"] == pytest.approx(math.log2(expected.alpha_attn / held.alpha_attn))
    regret = bt["regret"]
    # The defaults sit far from the optimum at 256 (0.5, 0.21): large regrets, (1, 1) the larger.
    assert regret["(1, 1)"]["nats"] > 0.3 and regret["(0.5, 0.5)"]["nats"] > 0.08
    assert regret["(0.5, 0.5)"]["nats"] < regret["(1, 1)"]["nats"]
    for r in regret.values():
        assert r["nats"] == pytest.approx(r["loss"] - bt["best_measured"]["mean"])
    assert "surrogate (quadratic)" in regret["predicted"]["source"]
    # Seed std: 2 seeds at every point of the held-out width -> in seed-std units too.
    assert bt["seed_std"] == pytest.approx(0.002, rel=0.5)
    assert regret["(1, 1)"]["in_seed_std"] == pytest.approx(regret["(1, 1)"]["nats"] / bt["seed_std"])
    assert bt["best_measured"]["mean"] == pytest.approx(
        min(np.mean([p.loss for p in trials(256) if (p.alpha_attn, p.alpha_ffn) == k])
            for k in {(p.alpha_attn, p.alpha_ffn) for p in trials(256)}))  # fmt: skip


def test_two_widths_predict_from_the_narrower_optimum_and_one_width_is_skipped() -> None:
    bt = run([64, 128])
    assert bt["status"] == "ok" and bt["basis"] == {"alpha_attn": "single_width", "alpha_ffn": "single_width"}
    assert run([64]) == {"status": "skipped", "reason": "only 1 proxy width(s) finished; a backtest needs 2 or more"}


def test_a_pair_outside_the_search_box_is_read_at_the_nearest_measured_point() -> None:
    small = SearchSpace(attn=(0.05, 0.8), ffn=(0.02, 0.8))  # (1, 1) lies outside it, (0.5, 0.5) inside
    points = [p for w in (64, 128) for p in trials(w) if p.alpha_attn <= 0.8 and p.alpha_ffn <= 0.8]
    optima = [width_optimum([p for p in points if p.width == w], space=small) for w in (64, 128)]
    bt = leave_widest_out(points, optima, space=small)
    assert bt["status"] == "ok"
    assert "surrogate" in bt["regret"]["(0.5, 0.5)"]["source"]
    ones = bt["regret"]["(1, 1)"]
    assert "nearest measured point" in ones["source"] and "outside the search box" in ones["source"]
    top = max(p.alpha_attn for p in points), max(p.alpha_ffn for p in points)  # the grid's corner nearest (1, 1)
    corner = [p.loss for p in points if p.width == 128 and (p.alpha_attn, p.alpha_ffn) == top]
    assert ones["loss"] == pytest.approx(sum(corner) / len(corner))
