"""Training throughput (issue 2): tokens/s and MFU of alphasearch's training step, and the same model in x-transformers.

One run, one device, three measurements:

(a) Peak: matmuls in the trainer's compute dtype (bf16; fp32 where the trainer falls back to fp32 because
    the CPU has no native bf16: an emulated bf16 peak would be meaningless and would take hours), timed
    on the device the model trains on, two shapes: the model's largest GEMM,
    (batch*seq, width) @ (width, 2*ffn_hidden) (the fused SwiGLU gate+up, 4096 x 256 x 1408 at the issue's
    config), and a square n x n (n = 2048). Each sample is the mean of a few back-to-back matmuls after
    warm-up; the PEAK used for MFU is the BEST sample of either shape over all repeats (the highest
    measured rate, so the MFU is the conservative one). Medians are reported too.
(b) alphasearch: `alphasearch.train.train` itself, the real code path (batch sampling from the default
    corpus, lr schedule, ProxyLM forward under bf16 autocast, backward, grad clipping, AdamW with the
    model's param groups, zero_grad, the per-step loss sync and divergence check). Evaluation and
    diagnostics are off and stall detection is disabled; steps are timed from the trainer's own `on_step`
    callback: `warmup` steps first (not timed), then `steps` timed steps, then the callback answers
    "cancelled" so the run ends without its final evaluation. Model construction is outside the timing.
(c) x-transformers: the same configuration (TransformerWrapper + Decoder: use_dynamic_tanh, full-head-dim
    rotary, SwiGLU with the same hidden size, same heads and head_dim, untied head, no Linear biases)
    trained by the SAME `train` function: for that measurement `alphasearch.model.ProxyLM` is swapped for
    a thin wrapper around the x-transformers model, so the optimizer, param groups, autocast, clipping and
    loop are identical by construction. (x-transformers' DynamicTanh always has a bias `beta`; it stays.)

The measurements are interleaved, peak A B, peak A B, ... (A = alphasearch, B = x-transformers), and
medians over the repeats are reported, because the machine may be shared and noisy. Within a repeat the
rate is tokens per step / the MEDIAN step time (a step during which another process held a core does not
move it); `*_wall` gives the end-to-end rate over all timed steps as well. `others_cpu` is the share of
all cores that OTHER processes used during each timed window (from /proc/stat minus this process's CPU
time), and `quiet` repeats the medians over the repeats where that share was <= 10% on both sides: on a
shared machine those are the numbers that describe the code rather than the neighbours. MFU =
ProxyLM.flops_per_token(seq) * median tokens/s / peak (6 x matmul parameters + full T x T attention,
PaLM appendix B); the x-transformers model has exactly the same matmul parameter count (checked).

    python -m benchmarks.train_throughput --json
    alphasearch bench train --json --steps 20 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import alphasearch.model as model_module  # noqa: E402
from alphasearch.config import ModelConfig, TrainConfig  # noqa: E402
from alphasearch.train import autocast_dtype, resolve_device, train  # noqa: E402

# The configuration, and a tiny one for the smoke test only (not a measurement of anything).
PRESETS: dict[str, dict[str, int]] = {
    "issue": {"width": 256, "depth": 4, "seq_len": 256, "batch_size": 16, "square_n": 2048},
    "tiny": {"width": 64, "depth": 2, "seq_len": 64, "batch_size": 4, "square_n": 256},
}
TARGET_MFU = 0.45
TARGET_RATIO = 1.25
QUIET_OTHERS = 0.10  # a repeat counts as quiet when other processes used <= 10% of the cores meanwhile
_ORIGINAL_PROXY = model_module.ProxyLM


# ---- (a) the matmul peak ---------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(
    m: int, k: int, n: int, device: torch.device, *, rounds: int = 5, dtype: torch.dtype = torch.bfloat16
) -> list[float]:
    """GFLOP/s of a (m, k) @ (k, n) matmul in `dtype`: `rounds` samples, each the mean over a few back-to-back calls."""
    a = torch.randn(m, k, dtype=dtype, device=device)
    b = torch.randn(k, n, dtype=dtype, device=device)
    flops = 2.0 * m * k * n
    calls = max(2, min(20, int(4e9 / flops)))  # about 4 GFLOP per sample
    for _ in range(3):
        a @ b
    _sync(device)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            a @ b
        _sync(device)
        samples.append(flops * calls / (time.perf_counter() - start) / 1e9)
    return samples


def linear_gemm_floor(
    model: nn.Module, tokens: int, device: torch.device, *, dtype: torch.dtype, rounds: int = 5
) -> dict[str, Any]:
    """The time one training step would take if it did nothing but its Linear layers' GEMMs.

    Every nn.Linear of `model` costs three GEMMs per step at `tokens` rows: forward x @ W.T, the input
    gradient g @ W and the weight gradient g.T @ x, in `dtype` (the trainer's compute dtype). Each distinct
    GEMM is timed `rounds` times after warm-up and its BEST time is used, so `ms` is a lower bound on any
    step that runs these GEMMs with torch's kernels; attention's own matmuls, every element-wise op and the
    optimizer come on top. It says how far the measured matmul peak (one large, favourable shape) is from
    what the model's own shapes can reach: the MFU ceiling is flops / (peak x this floor).
    """
    shapes: dict[tuple[int, int], int] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            key = (module.in_features, module.out_features)
            shapes[key] = shapes.get(key, 0) + 1
    total_s = 0.0
    flops = 0.0
    for (fan_in, fan_out), count in shapes.items():
        x = torch.randn(tokens, fan_in, dtype=dtype, device=device)
        w = torch.randn(fan_out, fan_in, dtype=dtype, device=device)
        g = torch.randn(tokens, fan_out, dtype=dtype, device=device)
        for gemm in (lambda x=x, w=w: x @ w.t(), lambda g=g, w=w: g @ w, lambda g=g, x=x: g.t() @ x):
            for _ in range(2):
                gemm()
            best = math.inf
            for _ in range(rounds):
                _sync(device)
                start = time.perf_counter()
                gemm()
                _sync(device)
                best = min(best, time.perf_counter() - start)
            total_s += best * count
            flops += 2.0 * tokens * fan_in * fan_out * count
    return {
        "ms": total_s * 1e3,
        "gflops": flops / total_s / 1e9,
        "linear_shapes_in_out_count": [[i, o, c] for (i, o), c in shapes.items()],
    }


def peak_shapes(
    cfg: ModelConfig, batch_size: int, seq_len: int, square_n: int
) -> dict[str, tuple[int, int, int]]:
    assert cfg.ffn_hidden is not None
    return {
        "model_gemm": (batch_size * seq_len, cfg.width, 2 * cfg.ffn_hidden),  # fused SwiGLU gate+up
        "square": (square_n, square_n, square_n),
    }


# ---- (c) the x-transformers model, shaped like ProxyLM ----------------------------------------------


class XTransformersLM(nn.Module):
    """The ProxyLM configuration built with x-transformers, with the interface `alphasearch.train` uses."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from x_transformers import Decoder, TransformerWrapper

        assert cfg.ffn_hidden is not None and cfg.n_heads is not None
        self.cfg = cfg
        self.net = TransformerWrapper(
            num_tokens=cfg.vocab_size,
            max_seq_len=cfg.max_seq_len,
            tie_embedding=False,
            attn_layers=Decoder(
                dim=cfg.width,
                depth=cfg.depth,
                heads=cfg.n_heads,
                attn_dim_head=cfg.head_dim,  # x-transformers' default is 64: would double the attention width
                attn_flash=True,  # F.scaled_dot_product_attention
                rotary_pos_emb=True,
                rotary_emb_dim=cfg.head_dim,  # full-head RoPE like ProxyLM (the default rotates half)
                ff_glu=True,
                ff_swish=True,  # SwiGLU
                ff_mult=cfg.ffn_hidden / cfg.width,
                ff_no_bias=True,
                use_dynamic_tanh=True,
                dynamic_tanh_init_alpha=cfg.alpha_attn,
            ),
        )
        # GLU's fused projection always has a bias in x-transformers; ProxyLM has none anywhere.
        for module in self.net.modules():
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias = None  # type: ignore[assignment]
        ours = _ORIGINAL_PROXY(cfg)
        if self.num_matmul_params() != ours.num_matmul_params():
            raise RuntimeError(
                f"x-transformers model has {self.num_matmul_params()} matmul parameters, ProxyLM "
                f"{ours.num_matmul_params()}: the configurations do not match"
            )

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.net(idx)
        if targets is None:
            return logits
        B, T = idx.shape
        return F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T))  # as ProxyLM

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def num_matmul_params(self) -> int:
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return _ORIGINAL_PROXY.param_groups(self, weight_decay)  # type: ignore[arg-type]  # same rule

    def alphas(self) -> dict[str, Any]:
        return {"attn": [], "ffn": [], "final": None}

    def embed_scale_value(self) -> float:
        return 1.0


@contextlib.contextmanager
def _model_class(cls: type[nn.Module]) -> Iterator[None]:
    """Make `alphasearch.train.train` build `cls` instead of ProxyLM (it imports ProxyLM at call time)."""
    model_module.ProxyLM = cls  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        model_module.ProxyLM = _ORIGINAL_PROXY  # type: ignore[misc]


# ---- (b) timing the real training step --------------------------------------------------------------


def time_training(
    model_cfg: ModelConfig,
    batch_size: int,
    seq_len: int,
    warmup: int,
    steps: int,
    threads: int,
    corpus: Any,
    seed: int,
) -> dict[str, Any]:
    """Run `alphasearch.train.train` for warmup + steps steps; time the last `steps` from its on_step callback."""
    stop_after = warmup + steps
    train_cfg = TrainConfig(
        steps=stop_after + 1,  # the run is cancelled after stop_after steps, before the final evaluation
        batch_size=batch_size,
        seq_len=seq_len,
        warmup_steps=min(20, stop_after),
        eval_interval=stop_after + 1,
        eval_batches=1,
        seed=seed,
        precision="bf16",
        diagnostics=False,
        detect_stalls=False,
        threads=threads,
    )
    stamps: list[float] = []
    cpu: list[float] = []
    busy: list[float | None] = []

    def on_step(event: Any) -> str | None:
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())
        busy.append(_busy_cpu_seconds())
        return "cancelled" if event.step >= stop_after else None

    result = train(model_cfg, train_cfg, corpus, on_step=on_step)
    if len(stamps) < stop_after:
        raise RuntimeError(f"the run stopped after {len(stamps)} of {stop_after} steps ({result.outcome})")
    # stamps[i] is taken at the end of step i+1: the timed steps are warmup+1 .. warmup+steps (with no
    # warm-up, steps 2 .. steps: the first has no start stamp).
    first = max(warmup - 1, 0)
    last = stop_after - 1
    per_step = [b - a for a, b in zip(stamps[first:last], stamps[first + 1 : last + 1], strict=True)]
    seconds = stamps[last] - stamps[first]
    tokens = batch_size * seq_len
    return {
        # headline: the median step (robust to another process stealing the cores for a moment)
        "tokens_per_s": tokens / statistics.median(per_step),
        # all timed steps end to end, stalls included
        "tokens_per_s_wall": len(per_step) * tokens / seconds,
        "step_ms_median": 1e3 * statistics.median(per_step),
        "step_ms_min": 1e3 * min(per_step),
        "step_ms_mean": 1e3 * seconds / len(per_step),
        # CPU time of this process / (wall time x threads): about 1 when the cores were ours, less when shared
        "cpu_share": (cpu[last] - cpu[first]) / (seconds * threads),
        # CPU time OTHER processes used meanwhile, as a share of all cores (0 = the machine was ours)
        "others_cpu": _others_share(busy[first], busy[last], cpu[last] - cpu[first], seconds),
        "precision": result.precision,
        "device": result.device,
        "n_params": result.n_params,
    }


# ---- the benchmark -----------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of this machine have been busy (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...: everything but idle and iowait
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _others_share(busy0: float | None, busy1: float | None, own_cpu: float, seconds: float) -> float | None:
    if busy0 is None or busy1 is None:
        return None
    return max(0.0, (busy1 - busy0 - own_cpu) / (seconds * (os.cpu_count() or 1)))


def _load() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        return round(os.getloadavg()[0], 2)
    return None


def main(
    as_json: bool = False,
    steps: int = 20,
    repeats: int = 3,
    *,
    warmup: int = 3,
    threads: int | None = None,
    preset: str = "issue",
) -> dict[str, Any]:
    """Measure peak, alphasearch and x-transformers throughput, interleaved; print and return the results."""
    if steps < 2 or repeats < 1 or warmup < 0:
        raise ValueError("use steps >= 2, repeats >= 1, warmup >= 0")
    from alphasearch.data import load_corpus

    size = PRESETS[preset]
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    B, T = size["batch_size"], size["seq_len"]
    model_cfg = ModelConfig(width=size["width"], depth=size["depth"], max_seq_len=T)
    device = resolve_device("auto")
    # The peak is measured in the dtype the trainer's matmuls actually run in.
    peak_dtype = autocast_dtype(device, "bf16") or torch.float32
    if peak_dtype != torch.bfloat16:
        print(
            "warning: this device has no native bf16; the trainer falls back to fp32, so the peak and the "
            "MFU are fp32 (the issue's bf16 target cannot be evaluated here)",
            file=sys.stderr,
        )
    corpus = load_corpus()
    flops_per_token = _ORIGINAL_PROXY(model_cfg).flops_per_token(T)
    shapes = peak_shapes(model_cfg, B, T, size["square_n"])
    load_start = _load()
    started = time.time()

    peak_samples: dict[str, list[list[float]]] = {name: [] for name in shapes}
    peak_others: list[float | None] = []
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for r in range(repeats):
        t0, c0, b0 = time.perf_counter(), time.process_time(), _busy_cpu_seconds()
        for name, (m, k, n) in shapes.items():
            peak_samples[name].append(matmul_gflops(m, k, n, device, dtype=peak_dtype))
        peak_others.append(
            _others_share(b0, _busy_cpu_seconds(), time.process_time() - c0, time.perf_counter() - t0)
        )
        ours.append(time_training(model_cfg, B, T, warmup, steps, threads, corpus, seed=r))
        with _model_class(XTransformersLM):
            theirs.append(time_training(model_cfg, B, T, warmup, steps, threads, corpus, seed=r))

    best_per_shape = {name: max(max(s) for s in rounds) for name, rounds in peak_samples.items()}
    peak_gflops = max(best_per_shape.values())
    floor = linear_gemm_floor(_ORIGINAL_PROXY(model_cfg), B * T, device, dtype=peak_dtype)
    # The MFU a step would reach if it were nothing but its Linear GEMMs at their best measured speed.
    mfu_ceiling = flops_per_token * B * T / (floor["ms"] / 1e3 * peak_gflops * 1e9)
    tps = statistics.median(s["tokens_per_s"] for s in ours)
    xtps = statistics.median(s["tokens_per_s"] for s in theirs)
    mfu = flops_per_token * tps / (peak_gflops * 1e9)
    ratio = tps / xtps
    xt_model = XTransformersLM(model_cfg)
    # Repeats during which other processes used at most QUIET_OTHERS of the cores, on both sides.
    quiet = [
        i
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
        if a["others_cpu"] is not None
        and b["others_cpu"] is not None
        and max(a["others_cpu"], b["others_cpu"]) <= QUIET_OTHERS
    ]
    quiet_out: dict[str, Any] = {"max_others_cpu": QUIET_OTHERS, "repeats": quiet}
    if quiet:
        q_tps = statistics.median(ours[i]["tokens_per_s"] for i in quiet)
        q_xtps = statistics.median(theirs[i]["tokens_per_s"] for i in quiet)
        quiet_out.update(
            tokens_per_s=round(q_tps, 1),
            xtransformers_tokens_per_s=round(q_xtps, 1),
            ratio_vs_xtransformers=round(q_tps / q_xtps, 3),
            mfu=round(flops_per_token * q_tps / (peak_gflops * 1e9), 4),
        )
    out: dict[str, Any] = {
        "tokens_per_s": round(tps, 1),
        "peak_tflops": round(peak_gflops / 1e3, 4),
        "peak_gflops": round(peak_gflops, 1),
        "peak_dtype": str(peak_dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace("float32", "fp32"),
        "mfu": round(mfu, 4),
        "xtransformers_tokens_per_s": round(xtps, 1),
        "xtransformers_mfu": round(flops_per_token * xtps / (peak_gflops * 1e9), 4),
        "ratio_vs_xtransformers": round(ratio, 3),
        "targets": {
            "mfu": TARGET_MFU,
            "ratio_vs_xtransformers": TARGET_RATIO,
            "mfu_met": mfu >= TARGET_MFU,
            "ratio_met": ratio >= TARGET_RATIO,
        },
        "step_ms": round(statistics.median(s["step_ms_median"] for s in ours), 1),
        "xtransformers_step_ms": round(statistics.median(s["step_ms_median"] for s in theirs), 1),
        # the same from wall time over all timed steps (stalls from other processes included)
        "tokens_per_s_wall": round(statistics.median(s["tokens_per_s_wall"] for s in ours), 1),
        "xtransformers_tokens_per_s_wall": round(
            statistics.median(s["tokens_per_s_wall"] for s in theirs), 1
        ),
        "cpu_share": round(statistics.median(s["cpu_share"] for s in ours + theirs), 3),
        "others_cpu": _median_or_none([s["others_cpu"] for s in ours + theirs]),
        # the same medians over the repeats the machine was (nearly) ours only; "repeats" lists them
        "quiet": quiet_out,
        "flops_per_token": flops_per_token,
        # Lower bound on a step from its Linear GEMMs alone (best of 5 per GEMM), and the MFU that bound allows.
        "linear_gemm_floor_ms": round(floor["ms"], 2),
        "linear_gemm_gflops": round(floor["gflops"], 1),
        "mfu_ceiling_linear_gemms": round(mfu_ceiling, 4),
        "linear_shapes_in_out_count": floor["linear_shapes_in_out_count"],
        "peak_gflops_by_shape": {
            name: {
                "shape_mkn": list(shapes[name]),
                "best": round(best, 1),
                "median": round(statistics.median(x for s in peak_samples[name] for x in s), 1),
            }
            for name, best in best_per_shape.items()
        },
        "config": {
            "preset": preset,
            "width": model_cfg.width,
            "depth": model_cfg.depth,
            "heads": model_cfg.n_heads,
            "head_dim": model_cfg.head_dim,
            "ffn_hidden": model_cfg.ffn_hidden,
            "norm": model_cfg.norm,
            "seq_len": T,
            "batch_size": B,
            "tokens_per_step": B * T,
            "precision": ours[0]["precision"],
            "optimizer": "AdamW(0.9, 0.95), wd 0.1 on matrices, clip 1.0 (alphasearch.train defaults)",
            "warmup_steps": warmup,
            "timed_steps": steps,
            "repeats": repeats,
            "params": ours[0]["n_params"],
            "xtransformers_params": theirs[0]["n_params"],
            "matmul_params": _ORIGINAL_PROXY(model_cfg).num_matmul_params(),
            "xtransformers_matmul_params": xt_model.num_matmul_params(),
        },
        "method": {
            "peak": "best sample over repeats and both shapes (each sample = mean of back-to-back matmuls "
            "in peak_dtype, the trainer's compute dtype)",
            "throughput": "median over repeats of (tokens per step / median step time); each repeat = "
            "alphasearch.train.train timed step by step by its on_step callback (model "
            "construction, warm-up and evaluation excluded); *_wall: all timed steps end to end",
            "order": "interleaved per repeat: peak, alphasearch, x-transformers",
            "mfu": "flops_per_token * median tokens/s / peak",
            "linear_gemm_floor": "sum over the model's nn.Linear layers of the best of 5 timings of their "
            "forward, input-gradient and weight-gradient GEMMs at batch*seq rows, in peak_dtype; "
            "mfu_ceiling_linear_gemms = flops_per_token * tokens_per_step / (floor * peak)",
        },
        "threads": threads,
        "device": ours[0]["device"],
        "cpu": _cpu_model(),
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "x_transformers": _version("x-transformers"),
        "python": platform.python_version(),
        "load_avg_1m_start": load_start,
        "load_avg_1m_end": _load(),
        "wall_s": round(time.time() - started, 1),
        "samples": {
            "tokens_per_s": [round(s["tokens_per_s"], 1) for s in ours],
            "xtransformers_tokens_per_s": [round(s["tokens_per_s"], 1) for s in theirs],
            "ratio_per_repeat": [
                round(a["tokens_per_s"] / b["tokens_per_s"], 3) for a, b in zip(ours, theirs, strict=True)
            ],
            "tokens_per_s_wall": [round(s["tokens_per_s_wall"], 1) for s in ours],
            "xtransformers_tokens_per_s_wall": [round(s["tokens_per_s_wall"], 1) for s in theirs],
            "step_ms_median": [round(s["step_ms_median"], 1) for s in ours],
            "xtransformers_step_ms_median": [round(s["step_ms_median"], 1) for s in theirs],
            "step_ms_min": [round(s["step_ms_min"], 1) for s in ours],
            "xtransformers_step_ms_min": [round(s["step_ms_min"], 1) for s in theirs],
            "others_cpu": [_round(s["others_cpu"]) for s in ours],
            "xtransformers_others_cpu": [_round(s["others_cpu"]) for s in theirs],
            "peak_others_cpu": [_round(x) for x in peak_others],
            "cpu_share": [round(s["cpu_share"], 3) for s in ours],
            "xtransformers_cpu_share": [round(s["cpu_share"], 3) for s in theirs],
            "peak_gflops": {
                name: [[round(x, 1) for x in s] for s in rounds] for name, rounds in peak_samples.items()
            },
        },
    }
    if not all(math.isfinite(v) and v > 0 for v in (tps, xtps, peak_gflops, mfu, mfu_ceiling)):
        raise RuntimeError(f"non-finite or non-positive measurement: {out}")
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        _print_table(out)
    return out


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x:.0%}"


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _print_table(out: dict[str, Any]) -> None:
    c = out["config"]
    print(
        f"training throughput: width {c['width']}, depth {c['depth']}, seq {c['seq_len']}, batch {c['batch_size']}, "
        f"{c['precision']}; {out['threads']} threads on {out['device']} ({out['cpu']}), torch {out['torch']}"
    )
    print(
        f"load average (1 min): {out['load_avg_1m_start']} at start, {out['load_avg_1m_end']} at end; "
        f"other processes used {_pct(out['others_cpu'])} of the cores while we trained (median)"
    )
    for name, p in out["peak_gflops_by_shape"].items():
        print(
            f"  {out['peak_dtype']} matmul {name:10s} {'x'.join(map(str, p['shape_mkn'])):16s} best {p['best']:8.1f} GFLOP/s"
            f"  median {p['median']:8.1f}"
        )
    print(f"  peak used for MFU: {out['peak_gflops']:.1f} GFLOP/s (best)")
    print(
        f"  the model's Linear GEMMs alone (fwd + both grads, best timings): {out['linear_gemm_floor_ms']:.1f} ms "
        f"per step at {out['linear_gemm_gflops']:.0f} GFLOP/s -> MFU ceiling {out['mfu_ceiling_linear_gemms'] * 100:.0f}%"
    )
    print(f"{'':16s}{'tokens/s':>10s}{'step ms':>10s}{'MFU':>8s}   samples (tokens/s; median step)")
    print(
        f"{'alphasearch':16s}{out['tokens_per_s']:10.0f}{out['step_ms']:10.1f}{out['mfu'] * 100:7.1f}%   "
        f"{out['samples']['tokens_per_s']}"
    )
    print(
        f"{'x-transformers':16s}{out['xtransformers_tokens_per_s']:10.0f}{out['xtransformers_step_ms']:10.1f}"
        f"{out['xtransformers_mfu'] * 100:7.1f}%   {out['samples']['xtransformers_tokens_per_s']}"
    )
    q = out["quiet"]
    if q["repeats"]:
        print(
            f"quiet repeats {q['repeats']} (others <= {q['max_others_cpu']:.0%} of the cores): "
            f"{q['tokens_per_s']:.0f} vs {q['xtransformers_tokens_per_s']:.0f} tokens/s, "
            f"ratio {q['ratio_vs_xtransformers']:.2f}x, MFU {q['mfu'] * 100:.1f}%"
        )
    else:
        print(f"no quiet repeat (others <= {q['max_others_cpu']:.0%} of the cores): the machine was shared")
    t = out["targets"]
    print(
        f"ratio vs x-transformers {out['ratio_vs_xtransformers']:.2f}x (target >= {t['ratio_vs_xtransformers']}x: "
        f"{'met' if t['ratio_met'] else 'NOT met'}); MFU {out['mfu'] * 100:.1f}% (target >= {t['mfu'] * 100:.0f}%: "
        f"{'met' if t['mfu_met'] else 'NOT met'}); medians over {c['repeats']} interleaved repeats"
    )


def _cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements per side (medians)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's, all cores)"
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="issue", help="'tiny' is for the smoke test"
    )
    args = parser.parse_args(argv)
    main(
        as_json=args.json,
        steps=args.steps,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        preset=args.preset,
    )


if __name__ == "__main__":
    _cli()
