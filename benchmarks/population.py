"""Population training (issue 16): trial-steps per second of `train_population` against today's `train`.

Both sides use both cores, measured side by side in one run, interleaved per repeat (A B C, A B C, ...):
- `single_2x1`: today's trainer as a study runs it: 2 processes x 1 thread, one trial each at a time.
- `pop_1x2`:    one population of K members in 1 process x 2 threads.
- `pop_2x1`:    two populations of K/2 members, 2 processes x 1 thread.
2 x 1 is the fairer comparison for the population too (it is how the executor would place two populations
on two cores, and one thread per process avoids intra-op sync on tiny ops); both are reported.

Each process builds its model(s) and trains the real code path of a `quick` trial: batch sampling, bf16
autocast where the CPU has native bf16, forward, backward, clipping, AdamW, the per-step loss sync and
divergence check, the evaluation on the fixed validation slice and diagnostics. To keep a repeat short on a
shared 2-core box it runs `--steps` steps (default 20) with one evaluation, at the end (the `quick` trial
evaluates every 50 steps: this is 2.5x its evaluation density, which favours neither side: evaluations are
batched in the population, its diagnostics are per member); stall detection is off so every run does the
same work. Processes start their
runs at one barrier (after two untimed warm-up steps); a side's rate = trial-steps done by all its processes / the slowest process's time.
Rates are medians over the repeats; ratios are of those medians and, per repeat, of the interleaved pair.
On a shared, loaded machine the wall-clock rate measures the scheduler as much as the code, so each run also
reports its CPU time (time.process_time of every process, all threads) and the rate per CPU-second:
trial-steps / CPU-seconds spent, a measure of what the code costs that other processes' load hardly moves
(spin-waiting intra-op threads count as spent, which charges the 1 x 2 mode for its synchronisation).

Widths 32, 64, 128: the `quick` regime (batch 32 x 128 bytes, depth 4, lr 1e-2). Width 256: the bench
config of benchmarks/train_throughput.py (batch 16 x 256, depth 4).

    python -m benchmarks.population --json                       # all widths
    python -m benchmarks.population --widths 32 --repeats 1 --steps 6   # a fast look
    python -m benchmarks.population --sequential --json          # one process, 1 thread: for a loaded box
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# width -> (batch, seq, default K)
REGIMES: dict[int, tuple[int, int, int]] = {32: (32, 128, 16), 64: (32, 128, 12), 128: (32, 128, 8), 256: (16, 256, 4)}
MODES = ("single_2x1", "pop_1x2", "pop_2x1")


def _configs(width: int, steps: int) -> tuple[Any, Any]:
    from alphasearch.config import ModelConfig, TrainConfig

    batch, seq, _ = REGIMES[width]
    model = ModelConfig(width=width, depth=4, max_seq_len=seq)
    train = TrainConfig(
        steps=steps, batch_size=batch, seq_len=seq, lr=1e-2, warmup_steps=max(1, steps // 7),
        eval_interval=steps, eval_batches=4, detect_stalls=False, diagnostics=True, threads=None,
    )
    return model, train


def _warm_up(model: Any, cfg: Any, corpus: Any, members: int) -> None:
    """Two untimed steps of what the process will time: oneDNN primitive creation and first-call costs."""
    from alphasearch.config import TrainConfig
    from alphasearch.population import Member, train_population
    from alphasearch.train import train

    short = TrainConfig.from_dict({**cfg.to_dict(), "steps": 2, "eval_interval": 2, "warmup_steps": 1})
    if members:
        train_population([Member(model, seed=i) for i in range(members)], short, corpus)
    else:
        train(model, short, corpus)


def _worker(width: int, steps: int, threads: int, members: int, barrier: Any, out: Any) -> None:
    """One process: `members` == 0 trains one trial with `train`, else one population of that many."""
    import torch

    torch.set_num_threads(threads)
    from alphasearch.config import ModelConfig
    from alphasearch.data import load_corpus
    from alphasearch.population import Member, train_population
    from alphasearch.train import train

    model, cfg = _configs(width, steps)
    corpus = load_corpus()
    corpus.unigram_entropy()  # cached per process: not part of either side's time
    alphas = [0.1 + 0.2 * i for i in range(max(members, 1))]
    _warm_up(model, cfg, corpus, members)
    barrier.wait()
    start, cpu_start = time.perf_counter(), time.process_time()
    if members == 0:
        result = train(model, cfg, corpus)
        done = result.steps_done
    else:
        ms = [Member(ModelConfig(**{**model.to_dict(), "alpha_attn": a, "alpha_ffn": a}), seed=i) for i, a in enumerate(alphas)]
        done = sum(r.steps_done for r in train_population(ms, cfg, corpus))
    out.put((time.perf_counter() - start, time.process_time() - cpu_start, done))


def run_mode(mode: str, width: int, steps: int, k: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    if mode == "single_2x1":
        plan = [(1, 0), (1, 0)]
    elif mode == "pop_1x2":
        plan = [(2, k)]
    else:
        plan = [(1, k // 2), (1, k - k // 2)]
    barrier, out = ctx.Barrier(len(plan)), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(width, steps, t, m, barrier, out)) for t, m in plan]
    for p in procs:
        p.start()
    got = [out.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(w for w, _, _ in got)
    cpu = sum(c for _, c, _ in got)
    trial_steps = sum(d for _, _, d in got)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "trial_steps": trial_steps,
        "trial_steps_per_s": trial_steps / wall,
        "trial_steps_per_cpu_s": trial_steps / cpu,
    }


def run_sequential(width: int, steps: int, k: int, repeats: int) -> dict[str, Any]:
    """One process, one thread: today's trainer and a population of k, interleaved, wall and CPU time each.

    The fallback for a shared box too loaded for the side-by-side run: per-core cost, not a two-core rate
    (on two cores both sides run as two independent 1-thread processes, so their ratio carries over as long
    as two copies do not contend for memory bandwidth, which the side-by-side mode measures).
    """
    import torch

    torch.set_num_threads(1)
    from alphasearch.config import ModelConfig
    from alphasearch.data import load_corpus
    from alphasearch.population import Member, train_population
    from alphasearch.train import train

    model, cfg = _configs(width, steps)
    corpus = load_corpus()
    corpus.unigram_entropy()
    members = [Member(ModelConfig(**{**model.to_dict(), "alpha_attn": a, "alpha_ffn": a}), seed=i)
               for i, a in enumerate(0.1 + 0.2 * j for j in range(k))]
    _warm_up(model, cfg, corpus, 0)
    _warm_up(model, cfg, corpus, k)
    runs: dict[str, list[dict[str, float]]] = {"single": [], "population": []}
    for _ in range(repeats):
        for side in ("single", "population"):
            w0, c0 = time.perf_counter(), time.process_time()
            if side == "single":
                done = train(model, cfg, corpus).steps_done
            else:
                done = sum(r.steps_done for r in train_population(members, cfg, corpus))
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            runs[side].append({"wall_s": wall, "cpu_s": cpu, "trial_steps": done,
                               "trial_steps_per_s": done / wall, "trial_steps_per_cpu_s": done / cpu})
            print(width, side, runs[side][-1], file=sys.stderr, flush=True)
    med = {s: statistics.median(r["trial_steps_per_cpu_s"] for r in runs[s]) for s in runs}
    med_wall = {s: statistics.median(r["trial_steps_per_s"] for r in runs[s]) for s in runs}
    return {
        "k": k,
        "batch_seq": REGIMES[width][:2],
        "median_trial_steps_per_cpu_s": med,
        "cpu_ratio": med["population"] / med["single"],
        "median_trial_steps_per_s": med_wall,
        "wall_ratio": med_wall["population"] / med_wall["single"],
        "per_repeat_cpu_ratio": [p["trial_steps_per_cpu_s"] / s["trial_steps_per_cpu_s"]
                                 for p, s in zip(runs["population"], runs["single"], strict=True)],
        "runs": runs,
    }


def cpu_info() -> dict[str, Any]:
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    import torch

    from alphasearch.train import autocast_dtype

    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "precision": "bf16" if autocast_dtype(torch.device("cpu"), "bf16") is not None else "fp32",
        "torch": torch.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="32,64,128,256")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", default="", help="population size per width, e.g. 32:16,64:12 (default REGIMES)")
    ap.add_argument("--sequential", action="store_true", help="one process, one thread, both sides in turn (loaded box)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    ks = {w: REGIMES[w][2] for w in widths}
    for item in filter(None, args.k.split(",")):
        w, k = item.split(":")
        ks[int(w)] = int(k)
    report: dict[str, Any] = {"machine": cpu_info(), "steps": args.steps, "repeats": args.repeats, "widths": {}}
    for width in widths:
        if args.sequential:
            report["widths"][str(width)] = run_sequential(width, args.steps, ks[width], args.repeats)
            continue
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                runs[mode].append(run_mode(mode, width, args.steps, ks[width]))
                print(width, mode, runs[mode][-1], file=sys.stderr, flush=True)
        med = {m: statistics.median(r["trial_steps_per_s"] for r in runs[m]) for m in MODES}
        med_cpu = {m: statistics.median(r["trial_steps_per_cpu_s"] for r in runs[m]) for m in MODES}
        report["widths"][str(width)] = {
            "k": ks[width],
            "batch_seq": REGIMES[width][:2],
            "median_trial_steps_per_s": med,
            "ratio_pop_1x2": med["pop_1x2"] / med["single_2x1"],
            "ratio_pop_2x1": med["pop_2x1"] / med["single_2x1"],
            "median_trial_steps_per_cpu_s": med_cpu,
            "cpu_ratio_pop_1x2": med_cpu["pop_1x2"] / med_cpu["single_2x1"],
            "cpu_ratio_pop_2x1": med_cpu["pop_2x1"] / med_cpu["single_2x1"],
            "per_repeat_ratio_pop_2x1": [
                p["trial_steps_per_s"] / s["trial_steps_per_s"] for p, s in zip(runs["pop_2x1"], runs["single_2x1"], strict=True)
            ],
            "runs": runs,
        }
    report["loadavg_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2) if args.json else report)
    return report


if __name__ == "__main__":
    main()
