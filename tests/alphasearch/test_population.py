"""Population training: a member trains as it would alone, members never touch each other, dropping works.

Tolerances: a population computes what `train` computes, but its matmuls are batched GEMMs (torch.bmm) and
its per-member reductions (loss mean, clipping norms, DyT's dL/dw and dL/dalpha) are summed in another
order, so results differ from `train`'s by float rounding.
- fp32 (TOL = 1e-4 nats, and the same absolute bound on learned alphas): the rounding differences are ~1e-7
  per op and stay ~1e-6 on the val loss after 12 steps; 1e-4 leaves room for the amplification of a few
  training steps, while any real difference (a wrong seed, batch, gradient or optimiser state) moves the
  loss by 1e-2 or more in 12 steps.
- bf16 autocast (TOL_BF16 = 1e-3): activations are rounded to 8 mantissa bits, so a 1e-7 difference can flip
  the rounding of single elements by one bf16 ulp (2^-8 relative) and training amplifies it: measured
  1.8e-4 nats after 12 steps for a member with alpha0 = 2.0 (saturated tanh: the most sensitive one), <1e-6
  for alpha0 = 0.7. The member-level checks therefore run in fp32; bf16 is checked on a population of one.
"""

from __future__ import annotations

import math

import pytest
import torch

from alphasearch.config import ModelConfig, TrainConfig
from alphasearch.data import load_corpus
from alphasearch.errors import ConfigError
from alphasearch.population import Member, PopulationTrainer, train_population
from alphasearch.train import TrainResult, train

TOL = 1e-4
TOL_BF16 = 1e-3
TINY = ModelConfig(width=32, depth=2, head_dim=16, max_seq_len=64, alpha_attn=0.7, alpha_ffn=0.3)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def tiny_train(**overrides) -> TrainConfig:
    base = {"steps": 12, "batch_size": 8, "seq_len": 32, "eval_interval": 6, "eval_batches": 2, "warmup_steps": 2,
            "detect_stalls": False, "seed": 3, "precision": "fp32"}
    base.update(overrides)
    return TrainConfig(**base)


def with_alpha(a: float, f: float) -> ModelConfig:
    return ModelConfig(**{**TINY.to_dict(), "alpha_attn": a, "alpha_ffn": f, "alpha_final": None})


def assert_same_run(a: TrainResult, b: TrainResult, tol: float = TOL) -> None:
    assert a.outcome == b.outcome and a.steps_done == b.steps_done
    assert [s for s, _ in a.val_curve] == [s for s, _ in b.val_curve]
    for (_, va), (_, vb) in zip(a.val_curve, b.val_curve, strict=True):
        assert va == pytest.approx(vb, abs=tol)
    assert a.train_loss == pytest.approx(b.train_loss, abs=tol)
    for key in ("attn", "ffn"):
        assert a.alphas[key] == pytest.approx(b.alphas[key], abs=tol)
    assert a.embed_scale == pytest.approx(b.embed_scale, rel=tol)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_population_of_one_equals_the_trainer(corpus, precision):
    cfg = tiny_train(precision=precision)
    alone = train(TINY, cfg, corpus)
    [member] = train_population([Member(TINY, seed=cfg.seed)], cfg, corpus)
    assert_same_run(member, alone, TOL if precision == "fp32" else TOL_BF16)
    assert member.precision == alone.precision and member.n_params == alone.n_params
    # the same record: every field, diagnostics with the same keys and the same evaluation steps
    assert member.to_dict().keys() == alone.to_dict().keys()
    assert member.diagnostics.keys() == alone.diagnostics.keys()
    assert member.diagnostics["steps"] == alone.diagnostics["steps"] == [6, 12]
    assert member.diagnostics["grad_norm"] == pytest.approx(alone.diagnostics["grad_norm"], rel=1e-3)


def test_a_member_of_a_population_trains_as_it_would_alone(corpus):
    cfg = tiny_train()
    # member 1 has the data seed as its init seed, so `train` alone reproduces it; the others differ in
    # alpha0 and init seed and are compared with populations of one with their own seeds
    members = [Member(with_alpha(2.0, 0.1), seed=5), Member(TINY, seed=cfg.seed), Member(with_alpha(0.2, 0.9), seed=9)]
    results = train_population(members, cfg, corpus)
    assert_same_run(results[1], train(TINY, cfg, corpus))
    for i in (0, 2):
        [alone] = train_population([members[i]], cfg, corpus)
        assert_same_run(results[i], alone)
    # and the members really are different runs (alpha0 and init differ): not one run copied three times
    finals = [r.final_val_loss for r in results]
    assert len({round(f, 4) for f in finals}) == 3
    assert results[0].alphas["attn"][0] == pytest.approx(2.0, abs=0.3)
    assert results[2].alphas["attn"][0] == pytest.approx(0.2, abs=0.3)


def test_a_nan_in_one_member_leaves_the_others_untouched(corpus):
    cfg = tiny_train()
    members = [Member(with_alpha(a, a), seed=s) for a, s in ((0.3, 1), (0.6, 2), (1.0, 3))]
    clean = train_population(members, cfg, corpus)
    trainer = PopulationTrainer(members, cfg, corpus)
    with torch.no_grad():
        trainer.model.p("blocks.0.attn.qkv.weight")[1, 0, 0] = math.nan  # one weight of member 1
    poisoned = trainer.run()
    assert poisoned[1].diverged and poisoned[1].diverged_at_step == 1 and poisoned[1].final_val_loss is None
    for i in (0, 2):
        assert poisoned[i].completed and math.isfinite(poisoned[i].final_val_loss)
        assert_same_run(poisoned[i], clean[i])


def test_a_dropped_member_stops_costing_compute_and_the_rest_go_on_unchanged(corpus):
    cfg = tiny_train()
    members = [Member(with_alpha(a, a), seed=s) for a, s in ((0.3, 1), (0.6, 2), (1.0, 3))]
    clean = train_population(members, cfg, corpus)
    sizes: list[int] = []

    def on_step(member: int, event):
        if member == 0:
            sizes.append(trainer.model.size)
        return "pruned" if member == 1 and event.val_loss is not None else None  # at the first evaluation

    trainer = PopulationTrainer(members, cfg, corpus, on_step=on_step)
    results = trainer.run()
    assert results[1].stopped == "pruned" and results[1].steps_done == 6 and results[1].final_val_loss is None
    [(step, val)] = results[1].val_curve
    assert step == 6 and val == pytest.approx(clean[1].val_curve[0][1], abs=TOL)
    # after the drop the model holds two members: every weight and every AdamW moment lost member 1's row
    assert sizes[:6] == [3] * 6 and sizes[6:] == [2] * 6
    assert all(p.shape[0] == 2 for p in trainer.model.parameters())
    for state in trainer.optimizer.state.values():
        assert state["exp_avg"].shape[0] == 2 and state["exp_avg_sq"].shape[0] == 2
    for i in (0, 2):
        assert_same_run(results[i], clean[i])


def test_stalls_are_detected_per_member_and_reported(corpus):
    cfg = tiny_train(lr=1e-7, detect_stalls=True, eval_interval=3)
    results = train_population([Member(with_alpha(0.5, 0.5), seed=s) for s in (1, 2)], cfg, corpus)
    for r in results:
        assert r.stalled and r.stalled_at_step == 6 and r.outcome == "stalled" and not r.completed


def test_members_must_share_the_architecture(corpus):
    with pytest.raises(ConfigError) as err:
        train_population([Member(TINY), Member(ModelConfig(**{**TINY.to_dict(), "depth": 1}))], tiny_train(), corpus)
    assert err.value.field == "members" and "depth" in str(err.value)
    diff = ModelConfig(**{**TINY.to_dict(), "attention": "differential"})
    with pytest.raises(ConfigError, match="attention"):
        train_population([Member(diff)], tiny_train(), corpus)


@pytest.mark.parametrize("norm", ["rmsnorm", "derf", "layernorm"])
def test_other_norm_families_train_as_alone(corpus, norm):
    model = ModelConfig(**{**TINY.to_dict(), "norm": norm})
    cfg = tiny_train(steps=6, eval_interval=3)
    [member] = train_population([Member(model, seed=cfg.seed)], cfg, corpus)
    assert_same_run(member, train(model, cfg, corpus))
