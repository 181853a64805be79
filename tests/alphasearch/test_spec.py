"""StudySpec: presets fill in defaults, overrides win, and bad input names the field and the fix."""

from __future__ import annotations

import json

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
