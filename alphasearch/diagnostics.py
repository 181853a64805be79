"""Why a proxy trains or stalls: per-layer measurements taken at evaluation steps and kept with the trial.

At each evaluation the trainer runs one extra forward pass on the first validation batch with hooks on
every norm and records, per position (attn / ffn per layer, final):
- `saturation`: fraction of DyT/Derf inputs with |alpha * x (+ shift)| > 2, where tanh/erf is flat
  (gradients through it vanish). Near 1: the norm is a sign function; near 0: it is linear.
- `input_rms`: RMS of what enters each norm (the residual stream there).
plus the learned alphas, the embedding scale and the gradient norm before clipping. The PILOT's stall
story (embedding output RMS 0.16 at width 64 with a sqrt(width) embedding scale → DyT inputs tiny, blocks
see no signal) is read off `input_rms` and `saturation` directly.

    >>> diag = Diagnostics()
    >>> diag.record(model, x, step=100, grad_norm=0.8)  # doctest: +SKIP
    >>> diag.to_dict()["input_rms"]["attn"][-1]  # doctest: +SKIP
    [0.93, 1.41, 1.88, 2.2]
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from alphasearch.nn import Derf, DyT

SATURATION_LEVEL = 2.0  # tanh(2) = 0.96: beyond this the op passes almost no gradient


def _positions(model: nn.Module) -> list[tuple[str, int, nn.Module]]:
    """(position, layer index, norm module) for every norm of a ProxyLM."""
    out: list[tuple[str, int, nn.Module]] = []
    blocks = cast(nn.ModuleList, model.blocks)
    for i, block in enumerate(blocks):
        out.append(("attn", i, cast(nn.Module, block.norm_attn)))
        out.append(("ffn", i, cast(nn.Module, block.norm_ffn)))
    out.append(("final", 0, cast(nn.Module, model.norm_final)))
    return out


class Diagnostics:
    """Accumulates measurements over a run; `to_dict()` is JSON-ready and stored with the trial."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.grad_norm: list[float] = []
        self.embed_scale: list[float] = []
        self.alpha: dict[str, list[Any]] = {"attn": [], "ffn": [], "final": []}
        self.saturation: dict[str, list[Any]] = {"attn": [], "ffn": [], "final": []}
        self.input_rms: dict[str, list[Any]] = {"attn": [], "ffn": [], "final": []}

    @torch.no_grad()
    def record(self, model: nn.Module, x: torch.Tensor, *, step: int, grad_norm: float) -> None:
        positions = _positions(model)
        seen: dict[int, tuple[float, float | None]] = {}
        hooks = []
        for idx, (_, _, norm) in enumerate(positions):

            def hook(module: nn.Module, args: tuple, idx: int = idx) -> None:
                h = args[0].float()
                rms = float(h.pow(2).mean().sqrt())
                sat = None
                if isinstance(module, (DyT, Derf)):
                    z = module.alpha.float() * h
                    if isinstance(module, Derf):
                        z = z + module.shift.float()
                    sat = float((z.abs() > SATURATION_LEVEL).float().mean())
                seen[idx] = (rms, sat)

            hooks.append(norm.register_forward_pre_hook(hook))
        was_training = model.training
        model.eval()
        try:
            model(x)
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        self.steps.append(step)
        self.grad_norm.append(grad_norm)
        self.embed_scale.append(float(model.embed_scale_value()))  # type: ignore[operator]
        for key in ("attn", "ffn", "final"):
            idxs = [i for i, (pos, _, _) in enumerate(positions) if pos == key]
            rms = [seen[i][0] for i in idxs]
            sat = [seen[i][1] for i in idxs]
            alphas = [float(cast(torch.Tensor, positions[i][2].alpha)) if hasattr(positions[i][2], "alpha") else None for i in idxs]
            if key == "final":
                rms, sat, alphas = rms[0], sat[0], alphas[0]  # type: ignore[assignment]
            self.input_rms[key].append(rms)
            self.saturation[key].append(sat)
            self.alpha[key].append(alphas)

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "grad_norm": self.grad_norm,
            "embed_scale": self.embed_scale,
            "alpha": self.alpha,
            "saturation": self.saturation,
            "input_rms": self.input_rms,
            "saturation_level": SATURATION_LEVEL,
        }
