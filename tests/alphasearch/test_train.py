"""The trainer: honest val losses, determinism, divergence as a result, cooperative stopping."""

from __future__ import annotations

import math

import pytest

from alphasearch.config import ModelConfig, TrainConfig
from alphasearch.data import load_corpus
from alphasearch.errors import ConfigError
from alphasearch.train import StepEvent, lr_at, make_adamw, train

TINY = ModelConfig(width=32, depth=1, head_dim=16, max_seq_len=64)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def tiny_train(**overrides) -> TrainConfig:
    base = {"steps": 12, "batch_size": 8, "seq_len": 32, "eval_interval": 6, "eval_batches": 2, "warmup_steps": 2,
            "detect_stalls": False}  # 12 steps cannot beat the unigram entropy
    base.update(overrides)
    return TrainConfig(**base)


def test_same_seed_gives_the_same_loss_and_other_seed_differs(corpus):
    a = train(TINY, tiny_train(seed=3), corpus)
    b = train(TINY, tiny_train(seed=3), corpus)
    c = train(TINY, tiny_train(seed=4), corpus)
    assert a.final_val_loss == b.final_val_loss
    assert a.val_curve == b.val_curve
    assert c.final_val_loss != a.final_val_loss


def test_result_carries_alphas_throughput_and_size(corpus):
    result = train(ModelConfig(width=32, depth=2, head_dim=16, max_seq_len=64, alpha_attn=0.7, alpha_ffn=0.2), tiny_train(), corpus)
    assert result.completed and not result.diverged
    assert len(result.alphas["attn"]) == 2 and len(result.alphas["ffn"]) == 2
    # alphas moved from their initial values but stay near them after 12 steps
    assert result.alphas["attn"][0] == pytest.approx(0.7, abs=0.2)
    assert result.alphas["final"] == pytest.approx(0.2, abs=0.2)
    assert result.tokens_per_s > 0 and result.wall_time_s > 0
    assert result.n_params > 32 * 256 * 2
    assert [s for s, _ in result.val_curve] == [6, 12]


def test_absurd_learning_rate_diverges_and_is_reported_not_raised(corpus):
    cfg = tiny_train(lr=50.0, warmup_steps=0, grad_clip=1e6, steps=60, eval_interval=30)
    result = train(TINY, cfg, corpus)
    assert result.diverged is True
    assert result.diverged_at_step is not None and 1 <= result.diverged_at_step <= 60
    assert result.final_val_loss is None
    assert not result.completed


def test_a_run_that_learns_nothing_is_reported_stalled_at_the_checkpoint(corpus):
    result = train(TINY, tiny_train(lr=1e-7, detect_stalls=True, steps=12, eval_interval=3), corpus)
    assert result.stalled and result.outcome == "stalled" and not result.completed
    assert result.stalled_at_step == 6  # the checkpoint at half the steps; it stopped there
    assert result.steps_done == 6
    assert result.final_val_loss > result.unigram_entropy - 0.1
    assert result.unigram_entropy == pytest.approx(corpus.unigram_entropy())


def test_on_step_can_prune_and_sees_val_losses(corpus):
    seen: list[StepEvent] = []

    def on_step(event: StepEvent) -> str | None:
        seen.append(event)
        return "pruned" if event.val_loss is not None else None

    result = train(TINY, tiny_train(), corpus, on_step=on_step)
    assert result.stopped == "pruned"
    assert result.steps_done == 6
    assert result.final_val_loss is None
    assert seen[-1].val_loss is not None and math.isfinite(seen[-1].val_loss)


def test_on_step_rejects_unknown_verdicts(corpus):
    with pytest.raises(ValueError, match="pruned"):
        train(TINY, tiny_train(steps=2), corpus, on_step=lambda e: "stop please")


def test_seq_len_longer_than_model_is_a_config_error(corpus):
    with pytest.raises(ConfigError, match="max_seq_len"):
        train(TINY, tiny_train(seq_len=128), corpus)


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    values = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.slow
def test_width_64_learns_well_below_uniform_in_300_steps(corpus):
    """Issue 2 must-show: batch 32 x 128 bytes, 300 steps, width 64, default DyT proxy: val < 3.0 nats/byte."""
    result = train(
        ModelConfig(width=64, depth=4, max_seq_len=128),
        TrainConfig(steps=300, batch_size=32, seq_len=128, eval_interval=100),
        corpus,
    )
    assert result.completed
    assert result.final_val_loss < 3.0 < math.log(256)
    # and it is below the unigram entropy, i.e. it learned something that depends on the input
    assert result.final_val_loss < corpus.unigram_entropy() - 0.3


@pytest.mark.parametrize("embed_scale", ["sqrt_width", "unit_rms"])
def test_diagnostics_show_the_activation_scale_the_embedding_rule_gives(corpus, embed_scale):
    """The PILOT's stall story, measured: sqrt(width) scaling feeds the first DyT inputs of RMS ~0.02*sqrt(d)
    (with the PILOT's fixed 0.02 init)."""
    cfg = ModelConfig(width=64, depth=2, max_seq_len=64, embed_scale=embed_scale, init_scaling="fixed")
    result = train(cfg, tiny_train(steps=2, eval_interval=1, lr=1e-6), corpus)
    diag = result.diagnostics
    assert diag["steps"] == [1, 2]
    assert len(diag["input_rms"]["attn"]) == 2 and len(diag["input_rms"]["attn"][0]) == 2
    first_rms = diag["input_rms"]["attn"][0][0]
    expected = 0.02 * (64**0.5 if embed_scale == "sqrt_width" else 1 / 0.02)
    assert first_rms == pytest.approx(expected, rel=0.15)
    for per_layer in diag["saturation"]["attn"] + diag["saturation"]["ffn"]:
        assert all(0.0 <= s <= 1.0 for s in per_layer)
    assert diag["alpha"]["attn"][0][0] == pytest.approx(0.5, abs=0.01)
    assert diag["grad_norm"][0] > 0


def _deep_saturation(result) -> float:
    """Mean DyT saturation over the attention/FFN norms of layers 2.. at the last evaluation."""
    sat = result.diagnostics["saturation"]
    deep = sat["attn"][-1][1:] + sat["ffn"][-1][1:]
    return sum(deep) / len(deep)


def test_width_matched_init_keeps_deep_dyt_layers_out_of_saturation(corpus):
    """docs/science.md, "init scaling": with a fixed 0.02 init a width-64 DyT proxy's optimiser grows the blocks
    until the residual stream saturates every DyT past layer 1 within 50 steps; copying the width-4096 init
    (0.16 at width 64) keeps them working. Same data, seed, lr and alphas: only the init differs."""
    runs = {}
    for scaling in ("fixed", "width_matched"):
        cfg = ModelConfig(width=64, depth=4, max_seq_len=128, init_scaling=scaling)
        runs[scaling] = train(cfg, TrainConfig(steps=50, batch_size=32, seq_len=128, eval_interval=50,
                                               lr=1e-2, detect_stalls=False), corpus)
    assert runs["fixed"].diagnostics["input_rms"]["ffn"][-1][-1] > 2 * runs["width_matched"].diagnostics[
        "input_rms"]["ffn"][-1][-1]
    assert _deep_saturation(runs["fixed"]) > 0.8
    assert _deep_saturation(runs["width_matched"]) < 0.5
    assert runs["width_matched"].final_val_loss < runs["fixed"].final_val_loss - 0.1


def test_adamw_is_torchs_fused_kernel_on_cpu_with_the_configured_hyperparameters():
    import torch

    from alphasearch.model import ProxyLM

    model = ProxyLM(TINY)
    opt = make_adamw(model.param_groups(0.1), TrainConfig(lr=2e-3, beta1=0.8, beta2=0.9))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["fused"] is True
    assert opt.defaults["lr"] == 2e-3 and opt.defaults["betas"] == (0.8, 0.9)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_freed_memory_is_kept_for_reuse_on_glibc():
    import os
    import platform

    from alphasearch.train import keep_freed_memory_for_reuse

    applied = keep_freed_memory_for_reuse()
    user_set = any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
    assert applied is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and not user_set)
    assert keep_freed_memory_for_reuse() is applied  # idempotent
