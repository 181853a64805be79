"""The proxy language model: a small LLaMA-style decoder whose norms can be DyT, Derf, RMSNorm or LayerNorm.

    tokens -> embedding * embed_scale -> depth x Block -> final norm -> untied head -> logits

    Block (pre-norm, default):  x = x + attn(norm_attn(x));  x = x + ffn(norm_ffn(x))
    Block (post-norm, opt-in):  x = norm_attn(x + attn(x));  x = norm_ffn(x + ffn(x))

References:
- LLaMA (Touvron et al. 2023): pre-norm RMSNorm, rotary position embeddings (RoPE, Su et al. 2021),
  SwiGLU feed-forward (Shazeer 2020), no biases, untied output head.
- DyT (Zhu et al. 2025, "Transformers without Normalization"): norms replaced by `weight * tanh(alpha * x)`;
  in the LLM setting a learnable scalar after the embedding and separate alpha0 for the norm before attention
  and for the others. See alphasearch.nn and DESIGN §1/§4.
- Differential Transformer (Ye et al. 2024): attention = softmax(Q1 K1^T) - lambda * softmax(Q2 K2^T),
  per-head RMSNorm after the subtraction, output scaled by (1 - lambda_init).

Speed notes (CPU, bf16 autocast; numbers in docs/benchmarks.md): one fused QKV matmul and one fused
gate+up matmul per block; RoPE rotations are a buffer applied with one complex multiply to q and k together;
attention is torch's scaled_dot_product_attention (flash kernel on CPU), except under bf16 autocast on CPU at
short sequences, where bf16 batched matmuls over a few blocks of query rows are faster (cpu_attention.py);
never a Python loop over heads.
Two hand-written backwards (_QKVRope, _SiluGate) write the gradients of a fused projection's parts into one
buffer instead of autograd's stack/cast/cat, and under autocast the norms hand their Linear its input
already in the autocast dtype (no separate cast pass, forward or backward). All of it but that attention
path computes the same values bit for bit as the plain autograd expressions (tests/alphasearch/test_model.py, test_nn.py).

    >>> import torch
    >>> from alphasearch.config import ModelConfig
    >>> model = ProxyLM(ModelConfig(width=64, depth=2))
    >>> model(torch.zeros(1, 8, dtype=torch.long)).shape
    torch.Size([1, 8, 256])
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from alphasearch.config import ModelConfig
from alphasearch.cpu_attention import MaterialisedCausalAttention, use_materialised_attention
from alphasearch.errors import ConfigError
from alphasearch.nn import RMSNorm, make_norm

__all__ = ["ProxyLM", "lambda_init"]


def lambda_init(layer: int) -> float:
    """Differential attention's lambda_init for `layer` counted from 1: 0.8 - 0.6 * exp(-0.3 * (layer - 1)).

    >>> round(lambda_init(1), 4), round(lambda_init(2), 4)
    (0.2, 0.3555)
    """
    return 0.8 - 0.6 * math.exp(-0.3 * (layer - 1))


def rope_tables(max_seq_len: int, rot_dim: int, base: float = 10000.0) -> torch.Tensor:
    """RoPE rotations e^(i * pos * theta_j) as (max_seq_len, rot_dim/2, 2) real tensor (cos, sin pairs).

    Stored real rather than complex so `module.to(dtype)` cannot drop the imaginary part; `apply_rope` views
    it as complex.
    """
    inv_freq = base ** (-torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)  # (rot_dim/2,)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)  # (T, rot_dim/2)
    return torch.stack([angles.cos(), angles.sin()], dim=-1).float()  # (T, rot_dim/2, 2)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, 2, heads, rot_dim) by position, pairs (2j, 2j+1) as in LLaMA's reference code.

    `rope` is (T, 1, 1, rot_dim/2, 2). One complex multiply does the rotation of q and k together: about 2.5x
    faster (forward + backward, CPU) than the rotate-half form x * cos + [x2, x1] * sin. Returns fp32.
    """
    B, T, two, heads, rot_dim = x.shape
    xc = torch.view_as_complex(
        x.float().reshape(B, T, two, heads, rot_dim // 2, 2)
    )  # (B, T, 2, heads, rot/2)
    return torch.view_as_real(xc * torch.view_as_complex(rope)).view(B, T, two, heads, rot_dim)


class _QKVRope(torch.autograd.Function):
    """The fused QKV output (B, T, 3, heads, hs) -> q, k rotated by RoPE and v, each (B, heads, T, hs) fp32.

    The same maths as `apply_rope` on the q/k part and `.float()` on v (bit for bit), with a hand-written
    backward that writes the gradients of q, k and v straight into ONE (B, T, 3, heads, hs) gradient
    buffer in the input's dtype. Through autograd the same step took a stack (unbind), a cast per part
    under bf16 autocast and a cat (split): two extra passes over the whole QKV gradient per layer.
    Nothing is saved for backward but the rotation table (the rotation's derivative is its conjugate).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, qkv: torch.Tensor, rope: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        qk = apply_rope(qkv[:, :, :2], rope)  # (B, T, 2, heads, hs) fp32, contiguous
        # (B, T, heads, hs): a view of qkv in fp32 (autograd tracks it as one), a copy in bf16
        v = qkv[:, :, 2].float()
        ctx.save_for_backward(rope)
        ctx.in_dtype = qkv.dtype
        q, k = qk.unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_q: torch.Tensor, grad_k: torch.Tensor, grad_v: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        (rope,) = ctx.saved_tensors
        B, heads, T, hs = grad_v.shape
        grad = torch.empty((B, T, 3, heads, hs), dtype=ctx.in_dtype, device=grad_v.device)
        conj = torch.view_as_complex(rope).conj().resolve_conj()  # (T, 1, 1, hs/2): the inverse rotation
        for i, g in enumerate((grad_q, grad_k)):
            g = g.transpose(1, 2).float().reshape(B, T, heads, hs // 2, 2)  # a view for SDPA's layout
            gc = torch.view_as_complex(g if g.stride(-1) == 1 else g.contiguous())
            if ctx.in_dtype == torch.float32:  # rotate straight into the buffer
                out = torch.view_as_complex(grad[:, :, i].view(B, T, heads, hs // 2, 2))
                torch.mul(gc, conj[:, 0], out=out)
            else:  # rotate in fp32, round into the buffer (what autograd's cast did)
                grad[:, :, i].copy_(torch.view_as_real(gc * conj[:, 0]).view(B, T, heads, hs))
        grad[:, :, 2].copy_(grad_v.transpose(1, 2))
        return grad, None


def linear_input_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype a Linear will cast its input `x` to: the autocast dtype when autocast is on for x's device.

    A norm whose output feeds a Linear returns it in this dtype directly (`out_dtype`), rounding on store
    instead of in a separate cast pass (and a cast back in backward): the same values.
    """
    device = x.device.type
    if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Causal scaled_dot_product_attention of (B, heads, T, hs) tensors.

    On CPU under bf16 autocast at short sequences it runs as bf16 matmuls with the scores materialised
    (alphasearch/cpu_attention.py: 1.3x faster than the flash kernel there; output bf16). Otherwise on CPU
    it runs in fp32 with autocast switched off: torch's CPU flash-attention kernel is faster in fp32 than in
    bf16 (about 20-30% at head_dim 32, torch 2.13; docs/benchmarks.md), and autocast would cast q, k, v to
    bf16. On GPU it runs in the input dtype (bf16 under autocast).
    """
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, is_causal=True, scale=scale)
    if use_materialised_attention(q):
        out = MaterialisedCausalAttention.apply(q, k, v, q.shape[-1] ** -0.5 if scale is None else scale)
        return out  # type: ignore[no-any-return]
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, scale=scale)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with RoPE; "differential" turns it into Diff attention.

    Differential: each head's q and k are split into two halves of head_dim/2 (the two maps of the head),
    v keeps the full head_dim, and
        out_h = (1 - lambda_init) * RMSNorm_h(softmax(q1 k1^T) v - lambda * softmax(q2 k2^T) v).
    NOTE: CPU flash attention needs q, k, v with the same last dim, so each half of q/k is zero-padded to
    head_dim (a zero tail does not change q.k) and both maps run in ONE SDPA call with 2*n_heads heads and
    the softmax scale of the half size, 1/sqrt(head_dim/2).
    """

    rope: torch.Tensor  # buffer, see __init__

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        assert cfg.n_heads is not None
        self.n_heads, self.head_dim, self.width = cfg.n_heads, cfg.head_dim, cfg.width
        self.differential = cfg.attention == "differential"
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)  # fused q, k, v projection
        self.proj = nn.Linear(cfg.width, cfg.width, bias=False)
        rot_dim = self.head_dim // 2 if self.differential else self.head_dim
        rope = rope_tables(cfg.max_seq_len, rot_dim)  # (max_T, rot_dim/2, 2)
        # (max_T, 1, 1, rot_dim/2, 2): broadcasts over (B, T, 2 [q, k], heads, ...). Not persistent: derived.
        self.register_buffer("rope", rope.view(-1, 1, 1, rot_dim // 2, 2), persistent=False)
        if self.differential:
            half = self.head_dim // 2
            self.lambda_init = lambda_init(layer)
            self.lambda_q1 = nn.Parameter(torch.zeros(half).normal_(0.0, 0.1))
            self.lambda_k1 = nn.Parameter(torch.zeros(half).normal_(0.0, 0.1))
            self.lambda_q2 = nn.Parameter(torch.zeros(half).normal_(0.0, 0.1))
            self.lambda_k2 = nn.Parameter(torch.zeros(half).normal_(0.0, 0.1))
            self.head_norm = RMSNorm(self.head_dim, eps=1e-5)  # per-head, shared weight across heads

    def lambda_value(self) -> torch.Tensor:
        """The learnable scalar lambda = exp(lq1.lk1) - exp(lq2.lk2) + lambda_init (differential only)."""
        l1 = torch.exp(torch.dot(self.lambda_q1, self.lambda_k1))
        l2 = torch.exp(torch.dot(self.lambda_q2, self.lambda_k2))
        return l1 - l2 + self.lambda_init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        nh, hs = self.n_heads, self.head_dim
        qkv = self.qkv(x).view(B, T, 3, nh, hs)  # (B, T, 3, nh, hs)
        rope = self.rope[:T].float()  # (T, 1, 1, rot_dim/2, 2)
        if not self.differential:
            # q and k rotated together; backward: one gradient buffer for q, k, v (see _QKVRope)
            q, k, v = _QKVRope.apply(qkv, rope)  # 3 x (B, nh, T, hs) fp32
            y = causal_attention(q, k, v)  # (B, nh, T, hs)
        else:
            # split, not slicing: its backward is one cat instead of zero-filled full-size grads added together
            qk, v = qkv.split([2, 1], dim=2)  # (B, T, 2, nh, hs), (B, T, 1, nh, hs)
            half = hs // 2
            qk = qk.reshape(B, T, 2, 2 * nh, half)  # (B, T, 2, 2nh, hs/2): head h -> maps 2h, 2h+1
            qk = apply_rope(qk, rope)  # (B, T, 2, 2nh, hs/2), fp32
            qk = F.pad(qk, (0, hs - half))  # (B, T, 2, 2nh, hs): zero tail keeps q.k, flash needs equal dims
            q, k = (t.transpose(1, 2) for t in qk.unbind(2))  # 2 x (B, 2nh, T, hs)
            v = v.expand(B, T, 2, nh, hs)  # (B, T, 2, nh, hs): both maps read the same v
            v = v.transpose(2, 3).reshape(B, T, 2 * nh, hs).transpose(1, 2)  # (B, 2nh, T, hs)
            y = causal_attention(q, k, v, scale=half**-0.5).float()  # (B, 2nh, T, hs) fp32 for the mix
            y = y.view(B, nh, 2, T, hs)  # (B, nh, 2, T, hs)
            y = y[:, :, 0] - self.lambda_value() * y[:, :, 1]  # (B, nh, T, hs)
            y = self.head_norm(y) * (1.0 - self.lambda_init)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)


class _SiluGate(torch.autograd.Function):
    """silu(gate) * up from the fused [gate; up] projection (..., 2 * hidden), with a hand-written backward.

    The same values and gradients as `F.silu(gate) * up` through autograd (bit for bit, in the input's
    dtype), and the same saved tensors (the projection and silu(gate)); the backward writes d gate and
    d up straight into one (..., 2 * hidden) buffer, where autograd's chunk backward concatenated them:
    one pass over the largest activation of the block saved, and one allocation.
    """

    @staticmethod
    def forward(ctx: Any, gate_up: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        gate, up = gate_up.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(gate_up, act)
        return act * up

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        gate_up, act = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        grad_in = torch.empty_like(gate_up, memory_format=torch.contiguous_format)
        grad_gate, grad_up = grad_in.chunk(2, dim=-1)
        torch.mul(grad, act, out=grad_up)
        torch.mul(grad, up, out=grad_gate)  # d act, then through silu in place
        torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)
        return grad_in


class SwiGLU(nn.Module):
    """`down(silu(gate(x)) * up(x))` with gate and up fused into one matmul."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * hidden, bias=False)  # fused [gate; up]
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(_SiluGate.apply(self.gate_up(x)))  # (B, T, width)


class Block(nn.Module):
    """One transformer block; `layer` counts from 1 (differential attention's lambda_init depends on it)."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        assert cfg.ffn_hidden is not None
        self.post_norm = cfg.norm_position == "post"
        self.norm_attn = make_norm(
            cfg.norm, cfg.width, alpha0=cfg.alpha_attn, bias=cfg.dyt_bias, shift0=cfg.derf_shift
        )
        self.attn = CausalSelfAttention(cfg, layer)
        self.norm_ffn = make_norm(
            cfg.norm, cfg.width, alpha0=cfg.alpha_ffn, bias=cfg.dyt_bias, shift0=cfg.derf_shift
        )
        self.ffn = SwiGLU(cfg.width, cfg.ffn_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            x = self.norm_attn(x + self.attn(x))
            return self.norm_ffn(x + self.ffn(x))
        lin = linear_input_dtype(x)  # the norm outputs go straight into a Linear
        x = x + self.attn(self.norm_attn(x, out_dtype=lin))
        return x + self.ffn(self.norm_ffn(x, out_dtype=lin))


class ProxyLM(nn.Module):
    """The LLaMA-style proxy LM of DESIGN §4, configured entirely by a `ModelConfig`.

    The final norm is present in both pre- and post-norm stacks (its alpha0 is `alpha_final`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.width)
        # Learnable scalar after the embedding (DyT's LLM recipe); frozen at 1 for the normalising families,
        # whose first norm removes the scale anyway.
        self.embed_scale = nn.Parameter(
            torch.tensor(self._embed_scale_init(cfg)), requires_grad=cfg.has_alpha
        )
        self.blocks = nn.ModuleList([Block(cfg, layer) for layer in range(1, cfg.depth + 1)])
        assert cfg.alpha_final is not None
        self.norm_final = make_norm(
            cfg.norm, cfg.width, alpha0=cfg.alpha_final, bias=cfg.dyt_bias, shift0=cfg.derf_shift
        )
        self.head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)  # untied from tok_emb
        assert cfg.init_std is not None  # ModelConfig.__post_init__ fills it from init_scaling
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=cfg.init_std)

    @staticmethod
    def _embed_scale_init(cfg: ModelConfig) -> float:
        if not cfg.has_alpha or cfg.embed_scale == "one":
            return 1.0
        if cfg.embed_scale == "unit_rms":
            assert cfg.init_std is not None  # filled by ModelConfig.__post_init__
            return 1.0 / cfg.init_std  # embedding output RMS ~1 at every width
        return math.sqrt(cfg.width)  # "sqrt_width", the published DyT LLM rule

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids `idx` (B, T); with `targets` (B, T), the mean cross-entropy
        in nats per token instead (computed in fp32 even under bf16 autocast)."""
        B, T = idx.shape
        if T > self.cfg.max_seq_len:
            raise ConfigError(
                "max_seq_len",
                f"sequence length {T} exceeds max_seq_len {self.cfg.max_seq_len}; raise max_seq_len",
            )
        x = self.tok_emb(idx) * self.embed_scale  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm_final(x, out_dtype=linear_input_dtype(x)))  # (B, T, V)
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T))

    # ---- helpers for the trainer and the benchmarks -------------------------------------------------

    def num_params(self) -> int:
        """Number of parameters, all of them (embedding and frozen embed_scale included)."""
        return sum(p.numel() for p in self.parameters())

    def num_matmul_params(self) -> int:
        """Parameters that take part in a matmul: every Linear weight (the head included, the embedding
        lookup not)."""
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token at context `seq_len`.

        Counted as in the PaLM paper (appendix B) and nanoGPT: 6 * num_matmul_params() for the weight
        matmuls (2 FLOPs per multiply-add, x3 for forward + backward), plus for attention, per layer,
        6 * seq_len * (q.k width + scores.v width) over the FULL T x T score matrix (not halved for the causal
        mask). That is 12 * depth * width * seq_len for standard attention and 18 * depth * width * seq_len
        for differential (two maps of half-size q.k, each applied to the full-size v). The embedding lookup
        and element-wise work (norms, RoPE, softmax, SwiGLU gate) are not counted.
        """
        cfg = self.cfg
        av_width = 2 * cfg.width if cfg.attention == "differential" else cfg.width
        attention = 6 * cfg.depth * seq_len * (cfg.width + av_width)
        return float(6 * self.num_matmul_params() + attention)

    def alphas(self) -> dict[str, list[float] | float | None]:
        """The current alpha of every norm: {"attn": [per layer], "ffn": [per layer], "final": float}.

        Empty lists and None for norms without alpha (rmsnorm, layernorm)."""

        def alpha(norm: nn.Module) -> float | None:
            a = getattr(norm, "alpha", None)
            return None if a is None else float(a.detach())

        blocks = cast(list[Block], list(self.blocks))
        attn = [alpha(b.norm_attn) for b in blocks]
        ffn = [alpha(b.norm_ffn) for b in blocks]
        return {
            "attn": [a for a in attn if a is not None],
            "ffn": [a for a in ffn if a is not None],
            "final": alpha(self.norm_final),
        }

    def embed_scale_value(self) -> float:
        """The current value of the scalar after the embedding."""
        return float(self.embed_scale.detach())

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: weight decay on the 2-D weight matrices (Linear, Embedding) only.

        Scalars and vectors (alpha, shift, norm weights/biases, embed_scale, lambda vectors) are not decayed:
        decaying alpha would pull it towards 0 independently of the data. Frozen parameters are left out.
        """
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.dim() == 2 else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
