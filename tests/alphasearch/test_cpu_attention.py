"""The materialised bf16 causal attention against fp32 flash attention, and when the model uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alphasearch.config import ModelConfig
from alphasearch.cpu_attention import (
    MAX_SEQ_LEN,
    MaterialisedCausalAttention,
    query_blocks,
    use_materialised_attention,
)
from alphasearch.model import ProxyLM, causal_attention

needs_mkldnn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="bf16 GEMMs need oneDNN")


def _qkv(seed: int, B: int = 2, H: int = 3, T: int = 40, D: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g, requires_grad=True) for _ in range(3)]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


@needs_mkldnn
@pytest.mark.parametrize(("scale", "T"), [(None, 40), (0.3, 40), (None, 130), (0.3, 256)])
def test_matches_fp32_flash_attention_to_bf16_rounding(scale: float | None, T: int) -> None:
    assert len(query_blocks(T)) == max(1, T // 64)  # 1, 2 (uneven) and 4 query blocks
    q, k, v = _qkv(0, T=T)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    s = q.shape[-1] ** -0.5 if scale is None else scale
    out = MaterialisedCausalAttention.apply(q, k, v, s)
    grads = torch.autograd.grad(out, (q, k, v), g)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert _rel(out, ref) < 1e-2  # bf16 keeps 8 bits: ~0.4% measured, a few roundings deep
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert _rel(got, want) < 1.5e-2
    # causal: the first position attends only to itself, so its output is v[..., 0, :] (rounded to bf16)
    torch.testing.assert_close(out[:, :, 0].float(), v[:, :, 0].detach().bfloat16().float())


@needs_mkldnn
@pytest.mark.parametrize("cut", [20, 70, 100])  # inside the first, at the second, inside the second block
def test_no_future_leakage(cut: int) -> None:
    q, k, v = _qkv(1, T=130)
    out = MaterialisedCausalAttention.apply(q, k, v, 0.25)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[:, :, cut:] *= -3.0  # change only the future of positions < cut
    v2[:, :, cut:] += 100.0
    out2 = MaterialisedCausalAttention.apply(q.detach(), k2, v2, 0.25)
    torch.testing.assert_close(out[:, :, :cut], out2[:, :, :cut], rtol=0, atol=0)
    assert not torch.equal(out[:, :, cut:], out2[:, :, cut:])


@needs_mkldnn
def test_used_only_on_cpu_under_bf16_autocast_at_short_sequences() -> None:
    q = torch.zeros(1, 1, 8, 16)
    assert not use_materialised_attention(q)  # no autocast: fp32 flash attention
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert use_materialised_attention(q)
        assert not use_materialised_attention(torch.zeros(1, 1, MAX_SEQ_LEN + 1, 16))
        q, k, v = _qkv(2)
        assert causal_attention(q, k, v).dtype == torch.bfloat16
    assert causal_attention(q, k, v).dtype == torch.float32


@needs_mkldnn
@pytest.mark.parametrize("attention", ["standard", "differential"])
def test_model_loss_under_autocast_close_to_fp32(attention: str) -> None:
    torch.manual_seed(0)
    model = ProxyLM(ModelConfig(width=64, depth=2, head_dim=16, attention=attention))
    idx = torch.randint(0, 256, (2, 33))
    ref = model(idx[:, :-1], idx[:, 1:])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    assert abs(float(loss.detach()) - float(ref.detach())) < 0.02 * float(ref.detach())
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad
    )
