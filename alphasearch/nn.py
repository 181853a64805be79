"""The normalisation layers the proxy LM can use, and a factory that builds one by name.

- `DyT`  Dynamic Tanh (Zhu et al. 2025, "Transformers without Normalization"): `weight * tanh(alpha * x) + bias`.
- `Derf` its erf follow-up: `weight * erf(alpha * x + shift) + bias`.
- `RMSNorm` (Zhang & Sennrich 2019, as in LLaMA) and `LayerNorm` (Ba et al. 2016), the normalising baselines.

`alpha` (and Derf's `shift`) is ONE learnable scalar per layer (a 0-d parameter), `weight`/`bias` are
per-channel. Every alpha parameter is named `alpha`, so a trainer finds them with
`[p for n, p in model.named_parameters() if n.endswith(".alpha")]`.

NOTE: RMSNorm and LayerNorm take their statistics over the LAST dimension only, i.e. per token. Normalising
over (T, C) or over the batch would leak information between positions of a causal LM.

    >>> import torch
    >>> norm = make_norm("dyt", 8, alpha0=0.2)
    >>> norm(torch.zeros(2, 3, 8)).shape
    torch.Size([2, 3, 8])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alphasearch.errors import ConfigError

__all__ = ["DyT", "Derf", "RMSNorm", "LayerNorm", "make_norm", "NORM_NAMES"]

NORM_NAMES: tuple[str, ...] = ("dyt", "derf", "rmsnorm", "layernorm")


class DyT(nn.Module):
    """Dynamic Tanh: `weight * tanh(alpha * x) + bias`, a drop-in replacement for a norm layer.

    `alpha` is one learnable scalar initialised to `alpha0`; `weight` (init 1) and, when `bias=True`,
    `bias` (init 0) are per-channel over the last dimension. The LLM setting of the paper has no bias.

        >>> import torch
        >>> dyt = DyT(4, alpha0=0.5)
        >>> dyt(torch.full((1, 4), 2.0))  # tanh(0.5 * 2) = 0.7616
        tensor([[0.7616, 0.7616, 0.7616, 0.7616]], grad_fn=<_DyTFunctionBackward>)
    """

    def __init__(self, dim: int, alpha0: float = 0.5, bias: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.tensor(float(alpha0)))  # shape (): one scalar per layer
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor, *, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """`out_dtype`: return the result rounded to this dtype (bf16 when the caller feeds it to a Linear
        under autocast, which would round it anyway): the rounding happens in the output store, with no
        extra cast pass forward or backward."""
        return _DyTFunction.apply(x, self.alpha, self.weight, self.bias, out_dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, alpha={self.alpha.item():.4g}, bias={self.bias is not None}"


class _DyTFunction(torch.autograd.Function):
    """`weight * tanh(alpha * x) (+ bias)` with a hand-written backward (same maths, fewer passes).

    NOTE: tanh(z) = 2 * sigmoid(2z) - 1, computed as weight * (2s - 1) = addcmul(-weight, s, 2 * weight).
    torch's CPU tanh kernel is ~7x slower than its sigmoid (torch 2.13, fp32); this form costs three
    element-wise passes and differs from tanh(alpha * x) * weight by < 1e-6.

    The same maths as autograd on that expression with fewer passes over the activations (6 element-wise
    ops in backward instead of autograd's 8, and fewer temporaries): the sigmoid is taken in place, one
    buffer serves d/ds, d/dz and d/dx, dL/dw is one product and one reduction (sum(grad * (2s - 1))
    rather than -sum(grad) + 2 sum(grad * s)), dL/dalpha one dot product, and a low-precision `out_dtype`
    output and its incoming gradient are never materialised in a second dtype (a mixed-dtype op reads the
    bf16 gradient directly; bf16 -> fp32 is exact). The output and dL/dx are bit-identical to autograd's;
    dL/dw and dL/dalpha differ from autograd's only by float rounding (the sums are associated
    differently; tests/alphasearch/test_nn.py). Saved for backward: x and s = sigmoid(2 alpha x), as
    autograd saved.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        alpha: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        out_dtype: torch.dtype | None,
    ) -> torch.Tensor:
        two_alpha = 2.0 * alpha
        s = torch.mul(x, two_alpha).sigmoid_()  # (..., C): sigmoid(2 alpha x)
        two_w = 2.0 * weight
        store = out_dtype if out_dtype is not None and bias is None else None
        if store is None or store == s.dtype:
            y = torch.addcmul(-weight, s, two_w)  # weight * tanh(alpha * x)
        else:  # round on store: bit-identical to addcmul(...).to(out_dtype)
            y = torch.addcmul(-weight, s, two_w, out=torch.empty(s.shape, dtype=store, device=s.device))
        if bias is not None:
            y = (
                y + bias
                if out_dtype is None
                else torch.add(y, bias, out=torch.empty(y.shape, dtype=out_dtype, device=y.device))
            )
        ctx.save_for_backward(x, two_alpha, weight, s)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, two_alpha, weight, s = ctx.saved_tensors
        need_x, need_alpha, need_w, need_b, _ = ctx.needs_input_grad
        lead = tuple(range(grad.dim() - 1))  # the dimensions a per-channel parameter was broadcast over
        acc = s.dtype  # gradients in the activations' dtype (fp32), as autograd did after its cast
        grad_w = grad_b = grad_x = grad_alpha = None
        if need_w:  # y = w * (2s - 1):  dL/dw = sum(grad * (2s - 1)), one product pass and one reduction
            grad_w = torch.addcmul(grad, grad, s, value=-2.0).sum(lead, dtype=acc).neg_()
        if need_b:
            grad_b = grad.sum(lead, dtype=acc)
        if need_x or need_alpha:
            g = grad * (2.0 * weight)  # dL/ds, fp32 (a bf16 grad is widened inside the op)
            torch.ops.aten.sigmoid_backward.grad_input(g, s, grad_input=g)  # dL/dz, z = 2 alpha x, in place
            if need_alpha:  # d z / d alpha = 2x: one dot product, no (g * x) temporary
                grad_alpha = 2.0 * torch.dot(g.reshape(-1), x.reshape(-1).to(g.dtype))
            if need_x:
                grad_x = g.mul_(two_alpha)  # dL/dx, in place
        return grad_x, grad_alpha, grad_w, grad_b, None


class Derf(nn.Module):
    """`weight * erf(alpha * x + shift) + bias`, with `alpha` and `shift` learnable scalars.

    >>> import torch
    >>> derf = Derf(2, alpha0=0.5, shift0=0.0)
    >>> derf(torch.tensor([[1.0, -1.0]]))  # erf(0.5) = 0.5205
    tensor([[ 0.5205, -0.5205]], grad_fn=<MulBackward0>)
    """

    def __init__(self, dim: int, alpha0: float = 0.5, shift0: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.tensor(float(alpha0)))  # shape ()
        self.shift = nn.Parameter(torch.tensor(float(shift0)))  # shape ()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor, *, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        y = torch.erf(torch.addcmul(self.shift, self.alpha, x)) * self.weight  # erf(alpha * x + shift)
        return _to(y if self.bias is None else y + self.bias, out_dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.dim}, alpha={self.alpha.item():.4g}, shift={self.shift.item():.4g}, "
            f"bias={self.bias is not None}"
        )


class RMSNorm(nn.Module):
    """`x / sqrt(mean(x**2, last dim) + eps) * weight`, per token (LLaMA's norm).

    >>> import torch
    >>> RMSNorm(2)(torch.tensor([[3.0, -3.0]]))
    tensor([[ 1.0000, -1.0000]], grad_fn=<MulBackward0>)
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, *, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        # Statistics in fp32 even under bf16 autocast, output back in the input's dtype.
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return _to(y.type_as(x) * self.weight, out_dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class LayerNorm(nn.Module):
    """`(x - mean) / sqrt(var + eps) * weight + bias`, statistics over the last dimension only (per token).

    >>> import torch
    >>> LayerNorm(2)(torch.tensor([[1.0, 3.0]]))
    tensor([[-1.0000,  1.0000]], grad_fn=<NativeLayerNormBackward0>)
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor, *, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        return _to(F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps), out_dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"


def _to(y: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return y if dtype is None else y.to(dtype)


def make_norm(
    name: str, dim: int, *, alpha0: float = 0.5, bias: bool = False, shift0: float = 0.0
) -> nn.Module:
    """Build a norm layer by name: "dyt" | "derf" | "rmsnorm" | "layernorm".

    `alpha0`, `bias` and `shift0` configure DyT/Derf (`shift0` only Derf) and are ignored by the
    normalising families (LayerNorm keeps its usual bias, RMSNorm has none).

        >>> make_norm("derf", 16, alpha0=0.3)
        Derf(16, alpha=0.3, shift=0, bias=False)
    """
    if name == "dyt":
        return DyT(dim, alpha0=alpha0, bias=bias)
    if name == "derf":
        return Derf(dim, alpha0=alpha0, shift0=shift0, bias=bias)
    if name == "rmsnorm":
        return RMSNorm(dim)
    if name == "layernorm":
        return LayerNorm(dim)
    raise ConfigError("norm", f"unknown norm {name!r}; use one of {', '.join(NORM_NAMES)}")
