"""Train one proxy LM and return an honest final validation loss (DESIGN §5).

    >>> from alphasearch.config import ModelConfig, TrainConfig
    >>> from alphasearch.data import load_corpus
    >>> result = train(ModelConfig(width=64, depth=2), TrainConfig(steps=20), load_corpus())  # doctest: +SKIP
    >>> result.final_val_loss < 5.55  # doctest: +SKIP
    True

AdamW (beta1, beta2) with weight decay on weight matrices only, gradient clipping, linear warmup then
cosine to `min_lr_ratio` of the peak, bf16 autocast where the device supports it (CPU included). The
validation loss is measured on a FIXED held-out slice (the same for every seed and trial), every
`eval_interval` steps and at the end.

Divergence is a result, not a crash: a non-finite loss, or a smoothed train loss `divergence_margin`
nats above its running minimum, stops the run and returns `diverged=True` with the step. So is a stall:
a val loss not clearly below the corpus's unigram entropy at the checkpoint (`stall_check_at` of the
steps) or at the end means the run learned nothing input-dependent; it stops and returns `stalled=True`. A caller's
`on_step` callback sees every step (and the val loss at evaluation steps) and may return "pruned" or
"cancelled" to stop the run cooperatively.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from alphasearch.config import ModelConfig, TrainConfig
from alphasearch.diagnostics import Diagnostics

if TYPE_CHECKING:
    from alphasearch.data import Corpus

STOP_REASONS = ("pruned", "cancelled")


@dataclass
class StepEvent:
    """What `on_step` sees after each optimiser step."""

    step: int  # 1-based count of optimiser steps done
    total_steps: int
    train_loss: float
    lr: float
    val_loss: float | None = None  # set only at evaluation steps
    elapsed_s: float = 0.0


OnStep = Callable[[StepEvent], "str | None"]


@dataclass
class TrainResult:
    """Everything one run produced. `final_val_loss` is the objective (None when stopped early)."""

    final_val_loss: float | None
    val_curve: list[tuple[int, float]]
    train_loss: float | None  # smoothed train loss at the last step
    diverged: bool
    diverged_at_step: int | None
    stopped: str | None  # "pruned" | "cancelled" | None (caller's decision, not a property of the run)
    steps_done: int
    alphas: dict[str, Any]  # learned alpha per layer at the end: {"attn": [...], "ffn": [...], "final": x}
    embed_scale: float
    tokens_per_s: float
    wall_time_s: float
    n_params: int
    device: str
    precision: str
    diagnostics: dict[str, Any] = field(default_factory=dict)
    stalled: bool = False  # val loss never got clearly below the unigram entropy (see TrainConfig)
    stalled_at_step: int | None = None
    unigram_entropy: float | None = None  # of the training corpus, nats/byte: the "learned nothing" level

    @property
    def completed(self) -> bool:
        return not (self.diverged or self.stalled) and self.stopped is None and self.final_val_loss is not None

    @property
    def outcome(self) -> str:
        """completed | diverged | stalled | pruned | cancelled."""
        if self.diverged:
            return "diverged"
        if self.stopped:
            return self.stopped
        return "stalled" if self.stalled else "completed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        data = dict(data)
        data["val_curve"] = [tuple(p) for p in data.get("val_curve", [])]
        return cls(**data)


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from alphasearch.errors import ConfigError

        raise ConfigError("device", "CUDA was requested but is not available; use device='auto' or 'cpu'")
    return torch.device(name)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 when asked for and the hardware runs it natively; None means plain fp32."""
    if precision != "bf16":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    # On CPUs without native bf16 (no AVX512-BF16/AMX) autocast emulates bf16 and is slower than fp32.
    return torch.bfloat16 if torch.backends.mkldnn.is_available() and _cpu_has_bf16() else None


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older/newer torch without these private probes: trust the request
        return True


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr over warmup_steps, then cosine down to min_lr_ratio * lr at the last step."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr_ratio * cfg.lr
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


class _DivergenceWatch:
    """Flags non-finite losses and a smoothed loss rising `margin` nats above its running minimum."""

    def __init__(self, margin: float, smoothing: float = 0.9) -> None:
        self.margin, self.smoothing = margin, smoothing
        self.ema: float | None = None
        self.best = math.inf

    def update(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        self.ema = loss if self.ema is None else self.smoothing * self.ema + (1 - self.smoothing) * loss
        self.best = min(self.best, self.ema)
        return self.ema > self.best + self.margin


_MALLOC_TUNED = False


def keep_freed_memory_for_reuse() -> bool:
    """glibc: keep freed activation-sized blocks (<= 32 MiB) in the heap instead of handing them back to the OS.

    Every training step frees and reallocates the same activations and gradients. With glibc's defaults a
    step returned tens of MiB to the kernel and took them back as fresh zeroed pages: 37-123 MiB of page
    faults per step at width 256 (about 0.05-0.1 s of kernel time on 2 cores, 2-4 % of a step), 2-3 MiB
    with this setting. It only changes where freed memory waits (the process keeps its peak heap instead
    of shrinking back), never a computed value. Done once per process, on glibc only, and not when the
    user set glibc's MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ themselves. Returns whether it applied.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    import os
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        # a fixed mmap threshold also stops glibc's dynamic adjustment of both thresholds
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) == 1 and libc.mallopt(m_trim_threshold, 1 << 30) == 1
    except (OSError, AttributeError):
        return False
    _MALLOC_TUNED = ok
    return ok


def make_adamw(param_groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW(lr, (beta1, beta2)) over `param_groups`, with torch's fused kernel on CPU and CUDA.

    The fused kernel does one pass per parameter tensor instead of the single-tensor path's six element-wise
    ops (about 3x faster for clip + step + zero_grad at width 256 on 2 CPU cores). Same update rule; it
    rounds differently in the last bit (max |difference| 1.2e-7 after 3 steps, docs/benchmarks.md), and is
    deterministic. Falls back to the default implementation where torch has no fused kernel.
    """
    kwargs: dict[str, Any] = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2)}
    try:
        return torch.optim.AdamW(param_groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # device or dtype without a fused kernel
        return torch.optim.AdamW(param_groups, **kwargs)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list, device: torch.device, dtype: torch.dtype | None) -> float:
    """Mean loss over the fixed validation batches (nats/byte)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for x, y in batches:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            total += float(model(x.to(device), y.to(device)))
    model.train(was_training)
    return total / len(batches)


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    corpus: Corpus,
    *,
    on_step: OnStep | None = None,
) -> TrainResult:
    """Train a fresh proxy LM on `corpus` and return its `TrainResult` (never raises for divergence)."""
    from alphasearch.model import ProxyLM

    if train_cfg.seq_len > model_cfg.max_seq_len:
        from alphasearch.errors import ConfigError

        raise ConfigError(
            "seq_len",
            f"seq_len {train_cfg.seq_len} exceeds the model's max_seq_len {model_cfg.max_seq_len}; "
            "raise ModelConfig.max_seq_len or shorten seq_len",
        )
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    keep_freed_memory_for_reuse()
    device = resolve_device(train_cfg.device)
    dtype = autocast_dtype(device, train_cfg.precision)
    torch.manual_seed(train_cfg.seed)
    model = ProxyLM(model_cfg).to(device)
    optimizer = make_adamw(model.param_groups(train_cfg.weight_decay), train_cfg)
    sampler = corpus.batch_sampler(train_cfg.batch_size, train_cfg.seq_len, seed=train_cfg.seed)
    val_batches = corpus.val_batches(train_cfg.eval_batches, train_cfg.batch_size, train_cfg.seq_len)
    watch = _DivergenceWatch(train_cfg.divergence_margin)
    entropy = corpus.unigram_entropy()
    stall_level = entropy - train_cfg.stall_margin if train_cfg.detect_stalls else math.inf
    check_at = train_cfg.stall_check_at if train_cfg.detect_stalls else 0.0
    stall_step = math.ceil(check_at * train_cfg.steps) if check_at else None
    stalled_at: int | None = None

    diagnostics = Diagnostics() if train_cfg.diagnostics else None
    val_curve: list[tuple[int, float]] = []
    diverged_at: int | None = None
    stopped: str | None = None
    steps_done = 0
    start = time.perf_counter()
    for step in range(train_cfg.steps):
        lr = lr_at(step, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = next(sampler)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(x, y)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps_done = step + 1
        loss_value = loss.item()  # one host sync per step: needed for divergence detection
        if watch.update(loss_value):
            diverged_at = steps_done
            break
        val_loss = None
        if steps_done % train_cfg.eval_interval == 0 or steps_done == train_cfg.steps:
            val_loss = evaluate(model, val_batches, device, dtype)
            if not math.isfinite(val_loss):
                diverged_at = steps_done
                break
            val_curve.append((steps_done, val_loss))
            if diagnostics is not None:
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    diagnostics.record(model, val_batches[0][0].to(device), step=steps_done, grad_norm=float(grad_norm))
            at_checkpoint = stall_step is not None and steps_done >= stall_step
            if (at_checkpoint or steps_done == train_cfg.steps) and val_loss > stall_level:
                stalled_at = steps_done
                break
        if on_step is not None:
            event = StepEvent(
                step=steps_done,
                total_steps=train_cfg.steps,
                train_loss=loss_value,
                lr=lr,
                val_loss=val_loss,
                elapsed_s=time.perf_counter() - start,
            )
            verdict = on_step(event)
            if verdict:
                if verdict not in STOP_REASONS:
                    raise ValueError(f"on_step returned {verdict!r}; return None, 'pruned' or 'cancelled'")
                stopped = verdict
                break
    wall = time.perf_counter() - start

    finished = diverged_at is None and stopped is None
    return TrainResult(
        # A stalled run keeps its last val loss (it is a real measurement); `completed` says it is not usable.
        final_val_loss=val_curve[-1][1] if finished and val_curve else None,
        val_curve=val_curve,
        train_loss=watch.ema,
        diverged=diverged_at is not None,
        diverged_at_step=diverged_at,
        stopped=stopped,
        steps_done=steps_done,
        alphas=model.alphas(),
        embed_scale=model.embed_scale_value(),
        tokens_per_s=steps_done * train_cfg.batch_size * train_cfg.seq_len / max(wall, 1e-9),
        wall_time_s=wall,
        n_params=model.num_params(),
        device=str(device),
        precision="bf16" if dtype is not None else "fp32",
        diagnostics=diagnostics.to_dict() if diagnostics is not None else {},
        stalled=stalled_at is not None,
        stalled_at_step=stalled_at,
        unigram_entropy=entropy,
    )
