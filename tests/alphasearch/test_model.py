"""The proxy LM: shapes for every variant, causality, differential attention, init, optimiser groups."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from alphasearch.config import ATTENTIONS, NORMS, ModelConfig
from alphasearch.errors import ConfigError
from alphasearch.model import (
    ProxyLM,
    _QKVRope,
    _SiluGate,
    apply_rope,
    lambda_init,
    linear_input_dtype,
    rope_tables,
)
from alphasearch.nn import DyT, RMSNorm

B, T = 2, 12


def tiny(**overrides) -> ModelConfig:
    fields = {"width": 32, "depth": 2, "head_dim": 16, "max_seq_len": 32}
    fields.update(overrides)
    return ModelConfig(**fields)


def build(seed: int = 0, **overrides) -> ProxyLM:
    torch.manual_seed(seed)
    return ProxyLM(tiny(**overrides))


def tokens(seed: int = 0, batch: int = B, length: int = T) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


VARIANTS = [(norm, attention) for norm in NORMS for attention in ATTENTIONS]


@pytest.mark.parametrize(("norm", "attention"), VARIANTS, ids=[f"{n}-{a}" for n, a in VARIANTS])
def test_forward_shapes_loss_and_gradients(norm: str, attention: str) -> None:
    # fixed 0.02 init: near-uniform logits at init (width_matched at width 32 starts with std 0.23)
    model = build(norm=norm, attention=attention, init_scaling="fixed")
    idx, targets = tokens(0), tokens(1)
    logits = model(idx)
    assert logits.shape == (B, T, 256)
    assert logits.dtype == torch.float32
    loss = model(idx, targets)
    assert loss.shape == ()
    torch.testing.assert_close(loss, F.cross_entropy(logits.view(-1, 256), targets.view(-1)))
    assert math.log(256) - 0.5 < loss.item() < math.log(256) + 0.5  # near-uniform at init
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("norm", ["dyt", "rmsnorm"])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_loss_is_fp32_under_bf16_autocast(norm: str, attention: str) -> None:
    model = build(norm=norm, attention=attention)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(tokens(0), tokens(1))
        logits = model(tokens(0))
    assert loss.dtype == torch.float32
    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, model(tokens(0), tokens(1)), atol=0.05, rtol=0)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_changing_a_future_token_does_not_change_earlier_logits(attention: str, norm_position: str) -> None:
    model = build(attention=attention, norm_position=norm_position, allow_untested_norm_position=True)
    idx = tokens(0)
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 256
    before, after = model(idx), model(changed)
    torch.testing.assert_close(after[:, :7], before[:, :7], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, 7:], before[:, 7:])


def test_batch_rows_are_independent() -> None:
    model = build()
    idx = tokens(0)
    changed = idx.clone()
    changed[1] = tokens(5, batch=1)[0]
    torch.testing.assert_close(model(changed)[0], model(idx)[0], atol=1e-6, rtol=0)


def test_lambda_init_schedule() -> None:
    assert lambda_init(1) == pytest.approx(0.2)
    assert lambda_init(2) == pytest.approx(0.8 - 0.6 * math.exp(-0.3))
    values = [lambda_init(layer) for layer in range(1, 30)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(0.8, abs=1e-3)
    assert all(v < 0.8 for v in values)


def test_each_block_gets_the_lambda_init_of_its_layer() -> None:
    model = build(attention="differential", depth=3)
    assert [b.attn.lambda_init for b in model.blocks] == pytest.approx([lambda_init(i) for i in (1, 2, 3)])
    attn = model.blocks[0].attn
    for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
        assert getattr(attn, name).shape == (8,)  # head_dim / 2
    assert isinstance(attn.head_norm, RMSNorm) and attn.head_norm.weight.shape == (16,)  # per head


def _reference_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """Attention written out head by head with explicit softmax maps (slow, obvious)."""
    Bx, Tx, C = x.shape
    nh, hs = attn.n_heads, attn.head_dim
    q, k, v = attn.qkv(x).split(C, dim=-1)  # 3 x (B, T, C)
    mask = torch.ones(Tx, Tx, dtype=torch.bool).tril()
    pos = torch.arange(Tx, dtype=torch.float64)

    def rope(t: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> rotated, pairs (2j, 2j + 1)
        d = t.shape[-1]
        freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.outer(pos, freq).float()  # (T, d/2)
        even, odd = t[..., 0::2], t[..., 1::2]
        rotated = torch.stack(
            [even * ang.cos() - odd * ang.sin(), odd * ang.cos() + even * ang.sin()], dim=-1
        )
        return rotated.flatten(-2)

    def softmax_map(qh: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
        scores = rope(qh) @ rope(kh).transpose(-1, -2) / math.sqrt(qh.shape[-1])
        return scores.masked_fill(~mask, float("-inf")).softmax(-1)

    outs = []
    for h in range(nh):
        sl = slice(h * hs, (h + 1) * hs)
        qh, kh, vh = q[..., sl], k[..., sl], v[..., sl]
        if not attn.differential:
            outs.append(softmax_map(qh, kh) @ vh)
            continue
        half = hs // 2
        a1 = softmax_map(qh[..., :half], kh[..., :half])
        a2 = softmax_map(qh[..., half:], kh[..., half:])
        lam = (
            torch.exp((attn.lambda_q1 * attn.lambda_k1).sum())
            - torch.exp((attn.lambda_q2 * attn.lambda_k2).sum())
            + attn.lambda_init
        )
        o = (a1 - lam * a2) @ vh  # (B, T, hs)
        o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * attn.head_norm.weight
        outs.append(o * (1 - attn.lambda_init))
    return attn.proj(torch.cat(outs, dim=-1))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_matches_head_by_head_reference(attention: str) -> None:
    model = build(attention=attention, width=64, head_dim=16)
    attn = model.blocks[1].attn
    if attention == "differential":
        with torch.no_grad():
            attn.head_norm.weight.uniform_(0.5, 1.5)  # so a per-head vs per-token norm mix-up shows
            attn.lambda_q1.mul_(5.0)  # lambda away from lambda_init
    x = torch.randn(B, T, 64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(attn(x), _reference_attention(attn, x), atol=1e-5, rtol=1e-4)


def test_differential_lambda_is_the_learnable_scalar_of_the_paper() -> None:
    attn = build(attention="differential").blocks[1].attn
    l1 = math.exp(float(attn.lambda_q1.detach() @ attn.lambda_k1.detach()))
    l2 = math.exp(float(attn.lambda_q2.detach() @ attn.lambda_k2.detach()))
    assert attn.lambda_value().item() == pytest.approx(l1 - l2 + lambda_init(2), abs=1e-6)
    attn.lambda_value().backward()
    assert attn.lambda_q1.grad is not None and attn.lambda_k2.grad is not None


def test_rope_scores_depend_only_on_relative_position() -> None:
    rope = rope_tables(32, 8).view(32, 1, 1, 4, 2)
    q = torch.randn(8).expand(1, 32, 2, 1, 8)  # the same vector at every position (and as "k")
    k = torch.randn(8).expand(1, 32, 2, 1, 8)
    rq, rk = apply_rope(q, rope)[0, :, 0, 0], apply_rope(k, rope)[0, :, 1, 0]  # (T, 8) each
    scores = rq @ rk.T  # (T, T)
    torch.testing.assert_close(scores[5, 2], scores[20, 17])
    torch.testing.assert_close(scores[9, 9], scores[0, 0])
    assert not torch.allclose(scores[5, 2], scores[5, 3])
    torch.testing.assert_close(rq.norm(dim=-1), q[0, :, 0, 0].norm(dim=-1))  # a rotation
    torch.testing.assert_close(rq[0], q[0, 0, 0, 0])  # position 0 is not rotated


@pytest.mark.parametrize(
    ("norm", "embed_scale", "expected", "learnable"),
    [
        ("dyt", "unit_rms", 1 / (0.02 * math.sqrt(4096 / 32)), True),  # 1 / init_std, width_matched
        ("dyt", "sqrt_width", math.sqrt(32), True),
        ("dyt", "one", 1.0, True),
        ("derf", "sqrt_width", math.sqrt(32), True),
        ("rmsnorm", "unit_rms", 1.0, False),
        ("rmsnorm", "sqrt_width", 1.0, False),
        ("layernorm", "unit_rms", 1.0, False),
    ],
    ids=[
        "dyt-unit_rms",
        "dyt-sqrt_width",
        "dyt-one",
        "derf-sqrt_width",
        "rmsnorm-unit_rms",
        "rmsnorm-sqrt_width",
        "layernorm-unit_rms",
    ],
)
def test_embed_scale_init_and_freezing(norm: str, embed_scale: str, expected: float, learnable: bool) -> None:
    model = build(norm=norm, embed_scale=embed_scale)
    assert model.embed_scale_value() == pytest.approx(expected)
    assert model.embed_scale.shape == ()
    assert model.embed_scale.requires_grad is learnable


def test_unit_rms_embedding_output_has_rms_near_one() -> None:
    model = build(width=256, head_dim=32, embed_scale="unit_rms")
    emb = model.tok_emb(torch.arange(256)) * model.embed_scale
    assert emb.pow(2).mean().sqrt().item() == pytest.approx(1.0, abs=0.05)


def test_alphas_report_each_position() -> None:
    model = build(depth=3, alpha_attn=0.8, alpha_ffn=0.2, alpha_final=0.1)
    alphas = model.alphas()
    assert set(alphas) == {"attn", "ffn", "final"}
    assert alphas["attn"] == pytest.approx([0.8] * 3)
    assert alphas["ffn"] == pytest.approx([0.2] * 3)
    assert alphas["final"] == pytest.approx(0.1)
    assert isinstance(model.blocks[0].norm_attn, DyT)
    assert build(norm="derf", alpha_ffn=0.3).alphas()["final"] == pytest.approx(0.3)  # defaults to alpha_ffn
    assert build(norm="rmsnorm").alphas() == {"attn": [], "ffn": [], "final": None}


@pytest.mark.parametrize("norm", ["dyt", "rmsnorm"])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_param_groups_decay_exactly_the_weight_matrices(norm: str, attention: str) -> None:
    model = build(norm=norm, attention=attention, dyt_bias=True)
    decay, no_decay = model.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    matrices = {
        f"{n}.weight"
        for n, m in model.named_modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))
    }
    assert decayed == matrices
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not_decayed == trainable - matrices
    assert all(p.dim() < 2 for p in no_decay["params"])
    if norm == "dyt":
        assert {"embed_scale", "blocks.0.norm_attn.alpha", "norm_final.bias"} <= not_decayed
    else:
        assert "embed_scale" not in not_decayed  # frozen: not handed to the optimiser at all
    if attention == "differential":
        assert "blocks.1.attn.lambda_q1" in not_decayed and "blocks.1.attn.head_norm.weight" in not_decayed


def test_linear_layers_have_no_bias_and_normal_init() -> None:
    model = build(width=256, head_dim=32, init_std=0.02)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            assert m.bias is None, name
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            assert m.weight.std().item() == pytest.approx(0.02, rel=0.1), name
            assert abs(m.weight.mean().item()) < 0.002, name
    assert model.head.weight.data_ptr() != model.tok_emb.weight.data_ptr()  # untied


def test_flops_per_token_counts_matmuls_and_attention() -> None:
    std, diff = build(), build(attention="differential")
    matmul = sum(m.weight.numel() for m in std.modules() if isinstance(m, torch.nn.Linear))
    assert std.num_matmul_params() == matmul
    assert std.flops_per_token(64) == 6 * matmul + 12 * 2 * 32 * 64
    assert diff.flops_per_token(64) == 6 * matmul + 18 * 2 * 32 * 64
    assert std.num_params() == sum(p.numel() for p in std.parameters())


def test_post_norm_dyt_is_refused_with_the_fix_in_the_message() -> None:
    with pytest.raises(ConfigError, match="allow_untested_norm_position=True") as info:
        tiny(norm="dyt", norm_position="post")
    assert info.value.field == "norm_position"
    assert "only validated pre-norm" in str(info.value)


def test_post_norm_opt_in_puts_the_norm_after_each_residual_add() -> None:
    model = build(norm="rmsnorm", norm_position="post")  # normalising families need no opt-in
    seen = []
    model.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(out))
    model(tokens(0))
    rms = seen[0].pow(2).mean(-1).sqrt()  # a block's output is its last norm's output: RMS 1 per token
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=0)
    opted_in = build(norm="dyt", norm_position="post", allow_untested_norm_position=True)
    assert opted_in.blocks[0].post_norm
    assert opted_in(tokens(0)).shape == (B, T, 256)


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"width": 48, "head_dim": 32}, "width", "not divisible by head_dim 32"),
        ({"width": 64, "n_heads": 3}, "n_heads", "not divisible by n_heads 3"),
        ({"width": 30, "head_dim": 15}, "head_dim", "RoPE needs an even head_dim"),
        ({"width": 36, "n_heads": 4}, "head_dim", "RoPE needs an even head_dim"),  # derived head_dim 9
        ({"width": 48, "head_dim": 6, "attention": "differential"}, "head_dim", "divisible by 4"),
    ],
    ids=["width-vs-head_dim", "width-vs-n_heads", "odd-head_dim", "odd-derived-head_dim", "diff-head_dim"],
)
def test_invalid_shapes_are_config_errors(overrides: dict, field: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        ModelConfig(**overrides)
    assert info.value.field == field


def test_sequence_longer_than_rope_table_is_a_config_error() -> None:
    model = build(max_seq_len=8)
    with pytest.raises(ConfigError, match="exceeds max_seq_len 8") as info:
        model(tokens(0, length=9))
    assert info.value.field == "max_seq_len"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_silu_gate_backward_is_bit_identical_to_autograd(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(4)
    gu = torch.randn(3, 5, 2 * 24, generator=gen).to(dtype)
    a, b = gu.clone().requires_grad_(True), gu.clone().requires_grad_(True)
    got = _SiluGate.apply(a)
    gate, up = b.chunk(2, dim=-1)
    expected = F.silu(gate) * up
    assert got.dtype == dtype and torch.equal(got, expected)
    grad = torch.randn(got.shape, generator=gen).to(dtype)
    got.backward(grad)
    expected.backward(grad)
    assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_qkv_rope_backward_is_bit_identical_to_autograd(dtype: torch.dtype) -> None:
    """_QKVRope == split + apply_rope + unbind + float through autograd: values and the QKV gradient."""
    Bx, Tx, nh, hs = 2, 6, 3, 8
    gen = torch.Generator().manual_seed(5)
    qkv = torch.randn(Bx, Tx, 3, nh, hs, generator=gen).to(dtype)
    rope = rope_tables(Tx, hs).view(Tx, 1, 1, hs // 2, 2)
    a, b = qkv.clone().requires_grad_(True), qkv.clone().requires_grad_(True)
    got = _QKVRope.apply(a, rope)
    qk, v = b.split([2, 1], dim=2)
    q, k = (t.transpose(1, 2) for t in apply_rope(qk, rope).unbind(2))
    expected = (q, k, v.squeeze(2).transpose(1, 2).float())
    for g, e in zip(got, expected, strict=True):
        assert g.shape == (Bx, nh, Tx, hs) and g.dtype == torch.float32 and torch.equal(g, e)
    # gradients laid out as SDPA returns them: (B, T, heads, hs) storage, seen as (B, heads, T, hs)
    grads = [torch.randn(Bx, Tx, nh, hs, generator=gen).transpose(1, 2) for _ in range(3)]
    torch.autograd.backward(got, grads)
    torch.autograd.backward(expected, grads)
    assert a.grad.dtype == dtype and torch.equal(a.grad, b.grad)


def test_norm_outputs_feed_linears_in_the_autocast_dtype() -> None:
    """Under bf16 autocast the pre-norm norms hand their Linear a bf16 tensor (rounded on store)."""
    x = torch.randn(2, 3, 4)
    assert linear_input_dtype(x) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear_input_dtype(x) == torch.bfloat16
    model = build()
    seen: list[torch.dtype] = []
    model.blocks[0].attn.qkv.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(tokens(0))
    model(tokens(0))
    assert seen == [torch.bfloat16, torch.float32]
