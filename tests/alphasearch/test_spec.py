"""StudySpec: presets fill in defaults, overrides win, and bad input names the field and the fix."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from alphasearch.errors import ConfigError
from alphasearch.spec import PRESETS, StudySpec


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_is_valid_for_a_large_target(preset):
    spec = StudySpec.from_dict({"preset": preset, "target_width": 8192, "target_depth": 80})
    assert spec.proxy_widths == sorted(PRESETS[preset]["proxy_widths"])
    assert spec.sampler == PRESETS[preset]["sampler"]
    assert spec.total_tokens <= spec.max_total_tokens
    assert spec.steps >= 1


def test_overrides_by_name_beat_the_preset():
    spec = StudySpec.from_dict(
        {"preset": "quick", "target_width": 4096, "target_depth": 32, "sampler": "tpe", "trials_per_width": 10,
         "proxy_widths": [128, 64], "rmsnorm_baseline": False}
    )
    assert spec.sampler == "tpe" and spec.trials_per_width == 10
    assert spec.proxy_widths == [64, 128]
    assert spec.rmsnorm_baseline is False


def test_json_and_yaml_round_trip():
    spec = StudySpec.from_dict({"preset": "smoke", "target_width": 2048, "target_depth": 24, "seeds": 2})
    again = StudySpec.from_text(json.dumps(spec.to_dict()))
    assert again == spec
    assert StudySpec.from_text(yaml.safe_dump(spec.to_dict())) == spec
    assert again.fingerprint() == spec.fingerprint()


def test_fingerprint_ignores_the_name_but_not_the_science():
    a = StudySpec.from_dict({"preset": "smoke", "target_width": 2048, "target_depth": 24})
    b = StudySpec.from_dict({"preset": "smoke", "target_width": 2048, "target_depth": 24, "name": "mine"})
    c = StudySpec.from_dict({"preset": "smoke", "target_width": 2048, "target_depth": 24, "lr": 1e-3})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize(
    ("fields", "field", "hint"),
    [
        ({"proxy_widths": [64, 4096]}, "proxy_widths", "not smaller than target_width"),
        ({"proxy_widths": [48, 64]}, "proxy_widths", "multiple of head_dim"),
        ({"alpha_attn_range": [1.0, 0.1]}, "alpha_attn_range", "inverted"),
        ({"alpha_ffn_range": [0.5, 0.5]}, "alpha_ffn_range", "empty"),
        ({"alpha_ffn_range": [0, 1]}, "alpha_ffn_range", "positive"),
        ({"sampler": "bayes"}, "sampler", "grid, tpe, gp, random"),
        ({"pruner": "hyperband"}, "pruner", "none, asha, median"),
        ({"norm": "rmsnorm"}, "norm", "dyt, derf"),
        ({"preset": "huge"}, "preset", "smoke, quick"),
        ({"trials_per_width": 10, "sampler": "grid"}, "trials_per_width", "square number"),
        ({"tokens_per_trial": 10**12}, "tokens_per_trial", "larger preset"),
        ({"colour": "blue"}, "colour", "unknown field"),
        ({"target_width": "wide"}, "target_width", "integer"),
        ({"replicate_best": -1}, "replicate_best", "0 (no replication)"),
        ({"replicate_best": 33}, "replicate_best", "0 (no replication)"),
        ({"replicate_best": "3"}, "replicate_best", "integer"),
        ({"replicate_best": True}, "replicate_best", "integer"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_specs_name_the_field_and_the_fix(fields, field, hint):
    data = {"preset": "quick", "target_width": 4096, "target_depth": 32, **fields}
    with pytest.raises(ConfigError) as info:
        StudySpec.from_dict(data)
    assert info.value.field == field
    assert hint in str(info.value)


def test_missing_target_is_named():
    with pytest.raises(ConfigError) as info:
        StudySpec.from_dict({"preset": "quick", "target_width": 4096})
    assert info.value.field == "target_depth"


def test_malformed_document_is_a_config_error_not_a_traceback():
    with pytest.raises(ConfigError, match="neither valid JSON nor valid YAML"):
        StudySpec.from_text("{preset: [unclosed")
    with pytest.raises(ConfigError, match="expected an object"):
        StudySpec.from_text("- just\n- a list\n")


def test_model_and_train_configs_follow_the_spec():
    spec = StudySpec.from_dict({"preset": "quick", "target_width": 4096, "target_depth": 32, "norm": "derf"})
    model = spec.model_config(64, 4, 0.3, 0.1)
    assert (model.width, model.depth, model.norm, model.alpha_attn, model.alpha_ffn, model.alpha_final) == (
        64, 4, "derf", 0.3, 0.1, 0.1)
    baseline = spec.model_config(64, 4, 1.0, 1.0, norm="rmsnorm")
    assert baseline.norm == "rmsnorm" and baseline.embed_scale == "one"
    train = spec.train_config(seed=2)
    assert train.seed == 2 and train.steps * train.batch_size * train.seq_len <= spec.tokens_per_trial


def test_replicate_best_comes_from_the_preset_and_an_explicit_zero_is_kept():
    quick = StudySpec.from_dict({"preset": "quick", "target_width": 4096, "target_depth": 32})
    smoke = StudySpec.from_dict({"preset": "smoke", "target_width": 4096, "target_depth": 32})
    off = StudySpec.from_dict({"preset": "quick", "target_width": 4096, "target_depth": 32, "replicate_best": 0})
    assert (quick.replicate_best, smoke.replicate_best, off.replicate_best) == (3, 0, 0)
    assert StudySpec.from_text(json.dumps(off.to_dict())).replicate_best == 0
    assert off.fingerprint() != quick.fingerprint()


def test_replicates_count_in_the_trial_and_token_totals():
    base = {"preset": "quick", "target_width": 4096, "target_depth": 32}  # 3 widths x 16 trials, baseline on
    on = StudySpec.from_dict(base)
    off = StudySpec.from_dict({**base, "replicate_best": 0})
    two_seeds = StudySpec.from_dict({**base, "seeds": 2})
    enough_seeds = StudySpec.from_dict({**base, "seeds": 3})
    assert (off.replicate_runs, on.replicate_runs, two_seeds.replicate_runs, enough_seeds.replicate_runs) == (0, 2, 1, 0)
    assert off.total_trials == 48 and on.total_trials == 48 + 3 * 2 and enough_seeds.total_trials == 48
    runs = (on.total_tokens - off.total_tokens) // on.tokens_per_trial
    assert runs == 3 * 2  # one single-seed run per replicate trial
    assert two_seeds.total_tokens == (3 * (16 * 2 + 1) + 3 * 2) * on.tokens_per_trial


def test_quick_runs_a_4x4_grid_so_every_width_can_finish_12_trials():
    quick = StudySpec.from_dict({"preset": "quick", "target_width": 4096, "target_depth": 32})
    assert (quick.sampler, quick.trials_per_width) == ("grid", 16) and quick.trials_per_width >= 12
    assert quick.total_tokens <= quick.max_total_tokens


def test_replicates_count_against_the_token_budget():
    # smoke: 2 widths x 4 trials; 1.2M tokens each -> 9.6M of the 10M budget, and 2 x 2 replicates break it.
    fits = {"preset": "smoke", "target_width": 4096, "target_depth": 32, "tokens_per_trial": 1_200_000}
    assert StudySpec.from_dict(fits).total_tokens == 9_600_000
    with pytest.raises(ConfigError) as info:
        StudySpec.from_dict({**fits, "replicate_best": 3})
    assert info.value.field == "tokens_per_trial" and "replicate_best" in str(info.value)


def test_a_regimes_rmsnorm_lr_trains_only_the_baseline() -> None:
    spec = StudySpec(preset="smoke", target_width=1024, target_depth=8, proxy_widths=[32, 64],
                     regimes={"32": {"lr": 0.01, "rmsnorm_lr": 0.02}})  # fmt: skip
    assert spec.regimes == {32: {"lr": 0.01, "rmsnorm_lr": 0.02}}
    assert spec.train_config(seed=0, width=32).lr == 0.01
    assert spec.train_config(seed=0, width=32, baseline=True).lr == 0.02
    assert spec.train_config(seed=0, width=64, baseline=True).lr == spec.lr  # no regime there
    with pytest.raises(ConfigError, match="rmsnorm_lr") as err:
        StudySpec(preset="smoke", target_width=1024, target_depth=8, proxy_widths=[32],
                  regimes={32: {"rmsnorm_lr": -1}})  # fmt: skip
    assert err.value.field == "regimes"


def test_lr_falls_as_one_over_width_above_the_given_width_and_a_regime_wins() -> None:
    spec = StudySpec.from_dict({"preset": "smoke", "target_width": 2048, "target_depth": 24, "lr": 8e-3,
                                "proxy_widths": [64, 128, 256, 512], "lr_falls_above_width": 128,
                                "regimes": {"512": {"lr": 1e-3}}})  # fmt: skip
    assert [spec.train_config(seed=0, width=w).lr for w in (64, 128, 256)] == [8e-3, 8e-3, 4e-3]
    assert spec.train_config(seed=0, width=256, baseline=True).lr == 4e-3  # the baseline trains where DyT does
    assert spec.train_config(seed=0, width=512).lr == 1e-3  # an explicit (or calibrated) regime wins
    off = StudySpec.from_dict({"preset": "smoke", "target_width": 2048, "target_depth": 24, "lr": 8e-3,
                               "proxy_widths": [64, 512]})  # fmt: skip
    assert off.lr_falls_above_width == 0 and off.train_config(seed=0, width=512).lr == 8e-3
    # `standard` trains wider proxies at smaller lrs (calibrated: docs/science.md); 0 is a choice that switches
    # a preset's rule off
    standard = StudySpec.from_dict({"preset": "standard", "target_width": 4096, "target_depth": 32})
    assert [standard.train_config(seed=0, width=w).lr for w in standard.proxy_widths] == [8e-3, 8e-3, 4e-3, 2e-3]
    assert StudySpec.from_dict({"preset": "standard", "target_width": 4096, "target_depth": 32,
                                "lr_falls_above_width": 0}).lr_falls_above_width == 0  # fmt: skip
    # the field at its default leaves the ids of older specs unchanged (this one's, from before the field
    # existed, at commit 5e8bbac); set, it is part of the id
    assert off.fingerprint() == "78fb77b52b072502"
    assert spec.fingerprint() != StudySpec.from_dict({**spec.to_dict(), "lr_falls_above_width": 0}).fingerprint()
    for bad in (-1, 1.5, "wide", True):
        with pytest.raises(ConfigError, match="lr_falls_above_width") as err:
            StudySpec.from_dict({"preset": "smoke", "target_width": 2048, "target_depth": 24,
                                 "lr_falls_above_width": bad})  # fmt: skip
        assert "0 (one lr" in str(err.value)


def test_target_lr_sets_every_proxy_lr_by_the_rule_and_a_regime_still_wins() -> None:
    base = {"preset": "quick", "target_width": 1024, "target_depth": 8, "target_lr": 3e-4}
    spec = StudySpec.from_dict(base)
    # inverse_width: lr(w) = target_lr * target_width / w -- the target's relative update per step.
    assert [spec.train_config(seed=0, width=w).lr for w in spec.proxy_widths] == pytest.approx([9.6e-3, 4.8e-3, 2.4e-3])
    same = StudySpec.from_dict({**base, "lr_rule": "same"})
    assert {same.train_config(seed=0, width=w).lr for w in same.proxy_widths} == {3e-4}
    ruled = StudySpec.from_dict({**base, "regimes": {"64": {"lr": 1e-2}}})
    assert ruled.train_config(seed=0, width=64).lr == 1e-2 and ruled.train_config(seed=0, width=32).lr == pytest.approx(9.6e-3)
    # the rule is part of what a study computes; unset, old ids stay as they were
    assert spec.fingerprint() != same.fingerprint()
    plain = {"preset": "quick", "target_width": 1024, "target_depth": 8}
    assert StudySpec.from_dict(plain).fingerprint() == StudySpec.from_dict({**plain, "lr_rule": "same"}).fingerprint()


def test_target_tokens_caps_the_proxy_budget_and_bad_recipes_name_the_field() -> None:
    base = {"preset": "quick", "target_width": 1024, "target_depth": 8}
    assert StudySpec.from_dict({**base, "target_tokens": 10**12}).steps == 150  # the preset's, never longer
    assert StudySpec.from_dict({**base, "target_tokens": 32 * 128 * 100}).steps == 100  # never above the target's
    for bad, field in (({"target_lr": 0}, "target_lr"), ({"target_lr": "3e-4"}, "target_lr"),
                       ({"target_lr": 0.5}, "target_lr"),  # 0.5 * 1024 / 32 = 16 at width 32
                       ({"lr_rule": "sqrt"}, "lr_rule"), ({"target_tokens": 10}, "target_tokens")):
        with pytest.raises(ConfigError, match=field) as err:
            StudySpec.from_dict({**base, **bad})
        assert err.value.field == field


def test_target_init_std_sets_the_proxies_init_by_the_init_scaling_and_keeps_old_ids() -> None:
    base = {"preset": "quick", "target_width": 1024, "target_depth": 8}
    plain = StudySpec.from_dict(base)
    assert plain.model_config(64, 4, 0.5, 0.5).init_std == pytest.approx(0.02 * math.sqrt(1024 / 64))
    spec = StudySpec.from_dict({**base, "target_init_std": 0.01})
    assert spec.model_config(64, 4, 0.5, 0.5).init_std == pytest.approx(0.01 * math.sqrt(1024 / 64))
    fixed = StudySpec.from_dict({**base, "target_init_std": 0.01, "init_scaling": "fixed"})
    assert fixed.model_config(64, 4, 0.5, 0.5).init_std == pytest.approx(0.01)
    assert spec.fingerprint() != plain.fingerprint()
    assert StudySpec.from_dict({**base, "target_init_std": None}).fingerprint() == plain.fingerprint()
    for bad in (0, -0.02, 2.0, "0.02", True):
        with pytest.raises(ConfigError) as err:
            StudySpec.from_dict({**base, "target_init_std": bad})
        assert err.value.field == "target_init_std"
