"""Causal attention for short sequences on CPU under bf16 autocast: bf16 matmuls, scores materialised.

Why: on a CPU with native bf16 (AVX512-BF16), torch's CPU flash-attention kernel is the slowest part of a
proxy's training step — 40% of it at width 256, seq 256 (docs/benchmarks.md) — in fp32 (36 ms forward +
backward per layer) and slower still in bf16 (48 ms). At the proxies' short sequences the whole
(T x T) score matrix per head is small (128 KiB at T = 256), so the textbook form — scores by one batched
bf16 matmul, softmax, one more matmul — runs on the fast bf16 GEMMs: about 27 ms as one block, about 20 ms
split into blocks of query rows that skip the masked triangle (`query_blocks`).

Numerics are those of autocast's "math" attention on GPU: q, k, v, the scores and the probabilities are
bf16 (the matmuls and the softmax accumulate in fp32), so results differ from fp32 flash attention by bf16
rounding (tests/alphasearch/test_cpu_attention.py bounds it). Memory: the probabilities are saved for
backward, batch x heads x T^2 bf16 values per layer (16 MiB at batch 16, 8 heads, T = 256), hence the
sequence-length limit in `use_materialised_attention`.
"""

from __future__ import annotations

from typing import Any

import torch

MAX_SEQ_LEN = 512  # above this the saved probabilities grow past what the flash kernel's O(T) state costs


def use_materialised_attention(q: torch.Tensor) -> bool:
    """Whether `causal_attention` should take this path for (B, heads, T, hs) `q`: CPU, bf16 autocast, short T."""
    return (
        q.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and q.shape[-2] <= MAX_SEQ_LEN
        and torch.backends.mkldnn.is_available()  # bf16 GEMMs go through oneDNN
    )


_MASKS: dict[tuple[int, torch.dtype], torch.Tensor] = {}


def _causal_mask(T: int, dtype: torch.dtype) -> torch.Tensor:
    """(T, T) additive mask, -inf above the diagonal; cached because every layer of every step needs it."""
    key = (T, dtype)
    if key not in _MASKS:
        _MASKS[key] = torch.full((T, T), float("-inf")).triu(1).to(dtype)
    return _MASKS[key]


def query_blocks(T: int) -> list[tuple[int, int]]:
    """Split the T query rows into blocks; block [r0, r1) needs keys [0, r1) only (causal).

    Blocks of about 64 rows: four blocks compute 5/8 of the full T x T scores, eight 9/16. Each block costs
    its own matmul and softmax calls, so more blocks stop paying: at T = 256 (batch 16, 8 heads of 32)
    forward + backward took about 48 / 34 / 20 / 23 / 35 ms with 1 / 2 / 4 / 8 / 16 blocks (noisy 2-core
    box; torch's fp32 flash kernel: 35 ms).
    """
    n = max(1, min(8, T // 64))
    edges = [round(i * T / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


class MaterialisedCausalAttention(torch.autograd.Function):
    """softmax(q k^T * scale + causal mask) v over (B, heads, T, hs) inputs; output bf16, same shape.

    Computed per block of query rows (`query_blocks`), each against the keys it can see, so the masked
    upper triangle is mostly never computed. Backward is the textbook one: dV = P^T dO, dP = dO V^T,
    dS = P * (dP - rowsum(dP * P)), dQ = scale dS K, dK = dS^T (scale Q), with dK and dV summed over the
    blocks in fp32. Gradients are returned in the inputs' dtypes.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
    ) -> torch.Tensor:
        B, H, T, D = q.shape
        Dv = v.shape[-1]
        bf16 = torch.bfloat16
        mask = _causal_mask(T, bf16)
        with torch.autocast("cpu", enabled=False):
            qs = (q * scale).to(bf16).reshape(B * H, T, D)  # scale folded into the cast pass
            kb = k.to(bf16).reshape(B * H, T, D)
            vb = v.to(bf16).reshape(B * H, T, Dv)
            out = torch.empty(B * H, T, Dv, dtype=bf16)
            probs = []
            for r0, r1 in query_blocks(T):
                scores = torch.baddbmm(mask[r0:r1, :r1], qs[:, r0:r1], kb[:, :r1].transpose(1, 2))
                p = torch.softmax(scores, dim=-1)  # (BH, r1 - r0, r1)
                del scores
                torch.bmm(p, vb[:, :r1], out=out[:, r0:r1])
                probs.append(p)
        ctx.save_for_backward(qs, kb, vb, *probs)
        ctx.scale = scale
        ctx.dtypes = (q.dtype, k.dtype, v.dtype)
        return out.view(B, H, T, Dv)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:  # type: ignore[override]
        qs, kb, vb, *probs = ctx.saved_tensors
        B, H, T, Dv = grad.shape
        D = qs.shape[-1]
        q_dtype, k_dtype, v_dtype = ctx.dtypes
        with torch.autocast("cpu", enabled=False):
            g = grad.to(torch.bfloat16).reshape(B * H, T, Dv)
            grad_q = torch.empty(B * H, T, D, dtype=q_dtype)
            grad_k = torch.zeros(B * H, T, D, dtype=torch.float32)
            grad_v = torch.zeros(B * H, T, Dv, dtype=torch.float32)
            for (r0, r1), p in zip(query_blocks(T), probs, strict=True):
                g_blk = g[:, r0:r1]
                grad_v[:, :r1] += torch.bmm(p.transpose(1, 2), g_blk)
                grad_p = torch.bmm(g_blk, vb[:, :r1].transpose(1, 2))  # (BH, r1 - r0, r1)
                grad_s = torch._softmax_backward_data(grad_p, p, -1, torch.bfloat16)
                del grad_p
                grad_q[:, r0:r1] = torch.bmm(grad_s, kb[:, :r1])
                grad_k[:, :r1] += torch.bmm(grad_s.transpose(1, 2), qs[:, r0:r1])  # qs carries the scale
            grad_q.mul_(ctx.scale)
        return (
            grad_q.view(B, H, T, D),
            grad_k.to(k_dtype).view(B, H, T, D),
            grad_v.to(v_dtype).view(B, H, T, Dv),
            None,
        )
