"""alphasearch.validation on tiny sizes with the real trainer and the in-process executor: the plan (which
points, which seeds, which width), training through the executor and the run cache, paired regrets and
their noise, stopping."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest

from alphasearch.cache import ResultCache
from alphasearch.errors import ConfigError
from alphasearch.executor import InProcessExecutor
from alphasearch.spec import StudySpec
from alphasearch.validation import (
    Run,
    ValidationInterrupted,
    ValidationPlan,
    check_seeds,
    default_width,
    plan_validation,
    run_validation,
    summarise,
)

# 2 proxy widths (32, 64) of a 2-block model; a validation at 96 trains 7 points x 2 seeds of 8 steps.
TINY: dict[str, Any] = {
    "preset": "smoke", "target_width": 1024, "target_depth": 8, "proxy_widths": [32, 64], "proxy_depths": [2],
    "tokens_per_trial": 8 * 8 * 32, "batch_size": 8, "seq_len": 32, "eval_interval": 4, "warmup_steps": 2,
}  # fmt: skip


def tiny_spec(**overrides: Any) -> StudySpec:
    return StudySpec.from_dict({**TINY, **overrides})


def test_default_width_is_twice_the_widest_proxy_or_the_target_when_that_fits() -> None:
    assert default_width(tiny_spec()) == 128
    assert default_width(tiny_spec(target_width=96)) == 96
    assert default_width(tiny_spec(target_width=128)) == 128


@pytest.mark.parametrize(("width", "words"), [(64, "not larger than the widest proxy (64)"), (32, "not larger"),
                                              (100, "multiple of the study's head_dim 32"), ("96", "integer")])  # fmt: skip
def test_a_bad_width_names_the_field_and_the_fix(width: Any, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        plan_validation(tiny_spec(), (0.5, 0.2), width=width)
    assert err.value.field == "width" and words in err.value.message


def test_a_bad_seed_count_names_the_field() -> None:
    for bad in (0, 17, 1.5, True):
        with pytest.raises(ConfigError) as err:
            check_seeds(bad)
        assert err.value.field == "seeds"
    assert check_seeds(None) == 2


def test_the_plan_is_the_recommendation_the_defaults_and_four_axis_neighbours_with_paired_seeds() -> None:
    spec = tiny_spec(first_seed=5)
    plan = plan_validation(spec, (0.4, 0.1), seeds=3)
    assert (plan.width, plan.depth, plan.seeds) == (128, 2, [5, 6, 7])
    assert [p.label for p in plan.points] == ["recommended", "(1, 1)", "(0.5, 0.5)", "attn x2", "attn /2",
                                              "ffn x2", "ffn /2"]  # fmt: skip
    pairs = [v for p in plan.points for v in (p.alpha_attn, p.alpha_ffn)]
    assert pairs == pytest.approx([0.4, 0.1, 1, 1, 0.5, 0.5, 0.8, 0.1, 0.2, 0.1, 0.4, 0.2, 0.4, 0.05])
    assert plan.total_runs == 21
    # Paired: seed s of every point trains with the same seed (init and data order); the recipe is the
    # study's at width 128 (its lr rule, its init reference width), stall detection off.
    requests = [plan.request(spec, p, 6) for p in plan.points]
    assert {r.train["seed"] for r in requests} == {6}
    assert {r.model["width"] for r in requests} == {128}
    assert requests[0].train["lr"] == spec.train_config(seed=6, width=128).lr
    assert requests[0].model["init_reference_width"] == 1024
    assert requests[0].train["detect_stalls"] is False
    assert ValidationPlan.from_dict(plan.to_dict()) == plan
    # With the target's recipe, the validation width trains at the lr the study's rule gives it there.
    recipe = tiny_spec(target_lr=3e-4)
    request = plan_validation(recipe, (0.4, 0.1)).request(recipe, plan.points[0], 0)
    assert request.train["lr"] == pytest.approx(3e-4 * 1024 / 128)


def test_a_recommendation_equal_to_a_default_trains_once_under_both_labels() -> None:
    plan = plan_validation(tiny_spec(), (1.0, 1.0))
    assert len(plan.points) == 6
    assert plan.points[0].labels == ("recommended", "(1, 1)") and plan.points[0].label == "recommended = (1, 1)"
    result = summarise(plan, [])
    assert result["regret"]["(1, 1)"]["label"] == "recommended = (1, 1)"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudySpec, ValidationPlan, list[Run], ResultCache]:
    spec = tiny_spec()
    plan = plan_validation(spec, (0.4, 0.1), width=96, seeds=2)
    cache = ResultCache(tmp_path_factory.getbasetemp() / "validation-data" / "cache")  # shared with the CLI test
    events: list[tuple[int, int]] = []
    runs = run_validation(spec, plan, executor=InProcessExecutor(threads=1), cache=cache,
                          on_progress=lambda done, total, run: events.append((done, total)))  # fmt: skip
    assert events[0] == (0, 14) and events[-1] == (14, 14)
    return spec, plan, runs, cache


def test_every_point_and_seed_trains_and_the_regret_is_paired(trained: Any) -> None:
    spec, plan, runs, _ = trained
    # (Runs may come from the cache: the service and CLI validation tests share it, in any order.)
    assert len(runs) == 14 and all(r.outcome == "completed" for r in runs)
    result = summarise(plan, runs)
    losses = {(r.point, r.seed): r.final_val_loss for r in runs}
    means = [statistics.fmean(losses[(i, s)] for s in plan.seeds) for i in range(7)]
    assert [p["mean"] for p in result["points"]] == pytest.approx(means)
    best = min(range(7), key=means.__getitem__)
    assert result["best"]["index"] == best and result["best"]["mean"] == pytest.approx(means[best])
    rec = result["regret"]["recommended"]
    assert rec["nats"] == pytest.approx(means[0] - means[best]) and rec["nats"] >= 0
    diffs = [losses[(0, s)] - losses[(best, s)] for s in plan.seeds]
    if best != 0:
        assert rec["noise"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(2))
        assert rec["in_noise"] == pytest.approx(rec["nats"] / rec["noise"])
        assert "paired" in rec["noise_kind"]
    else:
        assert rec["nats"] == 0 and rec["in_noise"] == 0 and rec["is_best"]
    for role, i in (("(1, 1)", 1), ("(0.5, 0.5)", 2)):
        assert result["regret"][role]["nats"] == pytest.approx(means[i] - means[best])
    seed_std = result["points"][3]["seed_std"]
    assert seed_std == pytest.approx(statistics.stdev([losses[(3, s)] for s in plan.seeds]))


def test_a_second_validation_comes_from_the_run_cache(trained: Any) -> None:
    spec, plan, runs, cache = trained
    again = run_validation(spec, plan, executor=InProcessExecutor(threads=1), cache=cache)
    assert all(r.cached for r in again)
    assert [r.final_val_loss for r in again] == [r.final_val_loss for r in runs]


def test_one_seed_borrows_the_proxies_seed_std_and_says_so() -> None:
    plan = plan_validation(tiny_spec(), (0.4, 0.1), seeds=1, proxy_seed_std=0.004, proxy_width=64)
    runs = [Run(i, p.label, p.alpha_attn, p.alpha_ffn, 0, "completed", 2.0 + 0.01 * i) for i, p in enumerate(plan.points)]
    runs[1] = Run(1, "(1, 1)", 1.0, 1.0, 0, "diverged", None)
    result = summarise(plan, runs)
    rec = result["regret"]["recommended"]
    assert rec["nats"] == 0 and rec["is_best"]
    half = result["regret"]["(0.5, 0.5)"]
    assert half["nats"] == pytest.approx(0.02) and half["noise"] == 0.004 and half["in_noise"] == pytest.approx(5)
    assert "proxy width 64" in half["noise_kind"]
    assert result["regret"]["(1, 1)"]["nats"] is None and result["points"][1]["outcome"] == "diverged"
    plan.proxy_seed_std = None
    assert summarise(plan, runs)["regret"]["(0.5, 0.5)"]["noise"] is None  # no proxy seed std: unknown, not 0


def test_should_stop_interrupts() -> None:
    spec = tiny_spec()
    plan = plan_validation(spec, (0.3, 0.3), width=96, seeds=1)
    with pytest.raises(ValidationInterrupted):
        run_validation(spec, plan, executor=InProcessExecutor(threads=1), should_stop=lambda: True)
