"""Scheduling overhead (issue 4): what running trials on Ray costs over the ideal, and whether cores stay busy.

1. Calibrate: train the benchmark model for a few steps in this process and pick the step count that makes
   one trial last about `--trial-seconds` (default 5 s). That same trial, trained once here, alone, is the
   solo reference.
2. Start the embedded Ray instance (cold start timed), warm one worker per slot (a 1-step trial each, as
   on a long-lived cluster), then run a study of `--trials` such trials through StudyRunner + RayExecutor.
   T = median training time of those trials as measured inside the trials themselves; the ideal is
   N * T / slots; overhead = end-to-end / ideal - 1. Everything outside training counts as overhead:
   scheduling, Optuna ask/tell on SQLite, heartbeats, model construction, progress relay, result return,
   and trials of unequal length finishing at different times. `where_the_rest_went` splits the slot-
   seconds that were not training into those causes.
3. A `quick`-preset study (two widths, its 3x3 grid each, short runs) to show both cores kept busy.

Concurrency comes from the runs' own start/end instants (recorded by the workers): the mean number of
runs going and the share of the study's time during which every slot held one. While a study runs, a
sampler thread records (every 0.5 s) the CPU time used by this process tree (driver + raylet + Ray
workers, so other users' load on a shared machine does not count) as a share of all cores, and
system-wide CPU (psutil.cpu_percent) for context.

    python -m benchmarks.scheduling_overhead --json      # ~4 min on 2 cores
    python -m benchmarks.scheduling_overhead --trials 4 --trial-seconds 1 --repeats 1 --no-quick  # a fast look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
import ray  # noqa: E402  (before psutil: Ray ships psutil in ray/thirdparty_files)

from alphasearch.executor import Finished, TrialRequest, run_request  # noqa: E402
from alphasearch.search import StudyRunner, optuna_study_name  # noqa: E402
from alphasearch.spec import StudySpec  # noqa: E402
from workers.ray_executor import RayExecutor  # noqa: E402

WIDTH, DEPTH, BATCH, SEQ = 64, 2, 16, 64  # a smoke-sized proxy: ~70 ms/step on one core


def bench_spec(steps: int, trials: int) -> StudySpec:
    return StudySpec.from_dict(
        {
            "preset": "smoke",
            "target_width": 4096,
            "target_depth": 32,
            "proxy_widths": [WIDTH],
            "proxy_depths": [DEPTH],
            "trials_per_width": trials,
            "tokens_per_trial": steps * BATCH * SEQ,
            "batch_size": BATCH,
            "seq_len": SEQ,
            "eval_interval": max(1, steps // 5),
            # A narrow, well-behaved range: every trial trains all its steps (none diverges early).
            "alpha_attn_range": [0.5, 1.5],
            "alpha_ffn_range": [0.3, 1.0],
            "max_total_tokens": 10**12,
        }
    )


def request_for(spec: StudySpec, steps: int | None = None) -> TrialRequest:
    train = spec.train_config(seed=0)
    if steps is not None:
        train = type(train).from_dict({**train.to_dict(), "steps": steps, "eval_interval": steps})
    return TrialRequest.build(spec.model_config(WIDTH, DEPTH, 1.0, 0.5), train, spec.corpus)


def calibrate(trial_seconds: float) -> tuple[int, float]:
    """Steps per trial for ~trial_seconds on one thread, and the solo time of such a trial."""
    probe = bench_spec(30, 1)
    run_request(request_for(probe, 5), threads=1)  # warm-up: corpus cache, allocator, kernels
    result = run_request(request_for(probe, 30), threads=1)
    steps = max(10, round(trial_seconds / (result.wall_time_s / result.steps_done)))
    solo = run_request(request_for(bench_spec(steps, 1)), threads=1)
    return steps, solo.wall_time_s


class Sampler:
    """Samples CPU use every `interval` s on a background thread."""

    def __init__(self, executor: RayExecutor, interval: float = 0.5) -> None:
        import psutil

        self.psutil, self.executor, self.interval = psutil, executor, interval
        self.me = psutil.Process()
        self.cores = psutil.cpu_count() or 1
        self.tree_util: list[float] = []  # this process tree's CPU use, % of all cores
        self.system_util: list[float] = []  # whole machine, % of all cores
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree_cpu_seconds(self) -> float:
        """CPU seconds used since the last call, summed per pid so exiting processes do not skew it."""
        used = 0.0
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except self.psutil.Error:
                continue
            total = times.user + times.system
            used += total - self._seen.get(proc.pid, 0.0)  # a new process: all its CPU time is in the window
            self._seen[proc.pid] = total
        return used

    def _loop(self) -> None:
        self._tree_cpu_seconds()
        self.psutil.cpu_percent(None)
        last = time.monotonic()
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            self.tree_util.append(100.0 * self._tree_cpu_seconds() / ((now - last) * self.cores))
            self.system_util.append(self.psutil.cpu_percent(None))
            last = now

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        return {
            "cores": self.cores,
            "samples": len(self.tree_util),
            "tree_cpu_util_pct": round(statistics.fmean(self.tree_util), 1) if self.tree_util else None,
            "system_cpu_util_pct": round(statistics.fmean(self.system_util), 1) if self.system_util else None,
        }


def run_study(executor: RayExecutor, spec: StudySpec, study_id: str, url: str) -> tuple[float, dict, list]:
    runner = StudyRunner(spec, study_id, url, executor)
    with Sampler(executor) as sampler:
        start, sampler.started_at = time.perf_counter(), time.time()
        assert runner.run() == "completed"
        wall = time.perf_counter() - start
        sampler.ended_at = time.time()
    trials = []
    for depth in spec.proxy_depths:
        for width in spec.proxy_widths:
            name = optuna_study_name(study_id, width, depth)
            trials += optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    return wall, {**sampler.summary(), "window": [sampler.started_at, sampler.ended_at]}, trials


def warm_workers(executor: RayExecutor, spec: StudySpec) -> float:
    """One 1-step trial per slot, so each worker has torch and the corpus loaded before timing starts."""
    start = time.perf_counter()
    handles = {executor.submit(request_for(spec, 1), lambda step, loss: None) for _ in range(executor.slots)}
    while handles:
        for event in executor.poll(timeout=None):
            assert isinstance(event, Finished), event
            handles.discard(event.handle)
    return time.perf_counter() - start


def overhead_run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    steps, solo_s = calibrate(args.trial_seconds)
    spec = bench_spec(steps, args.trials)
    t0 = time.perf_counter()
    executor = RayExecutor(queue_ahead=args.queue_ahead)
    slots = executor.slots  # starts the embedded instance
    ray_start_s = time.perf_counter() - t0
    warm_s = warm_workers(executor, spec)
    repeats = [one_repeat(executor, spec, f"overhead-{i}", url, slots) for i in range(args.repeats)]
    executor.close()
    summary = {
        key: round(statistics.median(r[key] for r in repeats), 2)
        for key in ("overhead_pct", "overhead_vs_sum_pct", "median_trial_s", "end_to_end_s")
    }
    return {
        "trials": args.trials,
        "queue_ahead": args.queue_ahead,
        "steps_per_trial": steps,
        "slots": slots,
        "solo_trial_s": round(solo_s, 2),
        "ray_start_s": round(ray_start_s, 2),
        "worker_warmup_s": round(warm_s, 2),
        "median_over_repeats": summary,
        "repeats": repeats,
    }


def one_repeat(executor: RayExecutor, spec: StudySpec, study_id: str, url: str, slots: int) -> dict[str, Any]:
    wall, util, trials = run_study(executor, spec, study_id, url)
    runs = [t.user_attrs["runs"][0] for t in trials]
    assert all(r["steps_done"] == spec.steps for r in runs), "a trial stopped early; the ideal would be wrong"
    train_s = [r["wall_time_s"] for r in runs]
    t_median = statistics.median(train_s)
    ideal = len(trials) * t_median / slots
    ideal_sum = sum(train_s) / slots  # perfect packing of the trials as they ran: robust to noisy neighbours
    return {
        "median_trial_s": round(t_median, 2),
        "trial_s_range": [round(min(train_s), 2), round(max(train_s), 2)],
        "ideal_s": round(ideal, 2),
        "end_to_end_s": round(wall, 2),
        "overhead_pct": round(100 * (wall / ideal - 1), 2),
        "ideal_from_sum_s": round(ideal_sum, 2),
        "overhead_vs_sum_pct": round(100 * (wall / ideal_sum - 1), 2),
        "where_the_rest_went": timeline(runs, *util.pop("window"), slots),
        "utilisation": util,
    }


def timeline(runs: list[dict[str, Any]], start: float, end: float, slots: int) -> dict[str, Any]:
    """Slot-seconds of the study that were not training, by cause (worker clocks = this machine's clock).

    in_task: inside the Ray task but outside the training loop (model and optimizer construction, final
    bookkeeping, progress flush; a fresh worker's first run also pays its imports here). idle: a slot with
    no task at all: the head (study start to the first runs), the gaps between runs (result return,
    driver, Ray dispatch) and the tail (the last runs finishing at different times).
    gap_per_trial_s: the median gap between consecutive runs in the same worker process.
    """
    workers = [run["diagnostics"]["worker"] for run in runs]
    in_task = sum(
        w["ended_at"] - w["started_at"] - r["wall_time_s"] for w, r in zip(workers, runs, strict=True)
    )
    busy = sum(w["ended_at"] - w["started_at"] for w in workers)
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for w in workers:
        by_pid.setdefault(w["pid"], []).append(w)
    gaps = []
    for same in by_pid.values():
        same.sort(key=lambda w: w["started_at"])
        gaps += [b["started_at"] - a["ended_at"] for a, b in zip(same, same[1:], strict=False)]
    # Sweep the start/end instants for the time during which every slot held a run.
    edges = sorted([(w["started_at"], 1) for w in workers] + [(w["ended_at"], -1) for w in workers])
    full, running, since = 0.0, 0, start
    for at, delta in edges:
        if running >= slots:
            full += at - since
        running, since = running + delta, at
    return {
        "in_task": round(in_task, 2),
        "idle": round(slots * (end - start) - busy, 2),
        "gap_per_trial_s": round(statistics.median(gaps), 3) if gaps else None,
        "worker_processes": len(by_pid),
        "mean_runs_going": round(busy / (end - start), 2),
        "share_of_time_all_slots_busy": round(full / (end - start), 3),
    }


def quick_run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    spec = StudySpec.from_dict(
        {
            "preset": "quick",
            "target_width": 4096,
            "target_depth": 32,
            "proxy_widths": [32, 64],
            "trials_per_width": 9,
            "tokens_per_trial": 32 * 128 * args.quick_steps,
            "eval_interval": max(1, args.quick_steps // 4),
            "rmsnorm_baseline": False,
        }
    )
    with RayExecutor(queue_ahead=args.queue_ahead) as executor:
        slots = executor.slots
        wall, util, trials = run_study(executor, spec, "quick", url)
    runs = [t.user_attrs["runs"][0] for t in trials]
    return {
        "spec": "quick preset, proxy_widths [32, 64], 3x3 grid each, "
        f"{args.quick_steps} steps of 32x128 tokens per trial, no baseline",
        "trials": len(trials),
        "slots": slots,
        "end_to_end_s": round(wall, 2),
        "sum_of_trial_training_s": round(sum(r["wall_time_s"] for r in runs), 2),
        "where_the_rest_went": timeline(runs, *util.pop("window"), slots),
        "utilisation": util,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--trials", type=int, default=8, help="trials in the overhead study (a multiple of the slots)"
    )
    parser.add_argument("--trial-seconds", type=float, default=5.0, help="target length of one trial")
    parser.add_argument("--queue-ahead", type=int, default=1, help="RayExecutor(queue_ahead=...)")
    parser.add_argument("--repeats", type=int, default=3, help="overhead studies to run (median reported)")
    parser.add_argument("--quick-steps", type=int, default=60, help="steps per trial in the quick-preset run")
    parser.add_argument("--no-quick", action="store_true", help="skip the quick-preset utilisation run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="asbench-") as tmp:
        os.environ.setdefault("ALPHASEARCH_DATA_DIR", tmp)  # before Ray starts: its workers inherit it
        url = f"sqlite:///{tmp}/bench.db"
        report: dict[str, Any] = {
            "command": "python -m benchmarks.scheduling_overhead " + " ".join(sys.argv[1:]),
            "ray": ray.__version__,
            "overhead": overhead_run(args, url),
        }
        if not args.no_quick:
            report["quick"] = quick_run(args, url)
        ray.shutdown()

    if args.json:
        print(json.dumps(report, indent=2))
        return
    o = report["overhead"]
    m = o["median_over_repeats"]
    print(f"{o['trials']} trials x {o['steps_per_trial']} steps on {o['slots']} slots (Ray {report['ray']})")
    print(f"  solo trial in-process {o['solo_trial_s']} s; Ray start {o['ray_start_s']} s, worker warm-up "
          f"{o['worker_warmup_s']} s (neither in end-to-end)")  # fmt: skip
    for r in o["repeats"]:
        print(
            f"  median trial {r['median_trial_s']} s {r['trial_s_range']}: ideal {r['ideal_s']} s, end-to-end "
            f"{r['end_to_end_s']} s -> {r['overhead_pct']} % (vs sum of trial times: {r['overhead_vs_sum_pct']} %); "
            f"slot-seconds not training: {r['where_the_rest_went']}; {r['utilisation']}"
        )
    print(f"  median over repeats: overhead {m['overhead_pct']} % (vs sum: {m['overhead_vs_sum_pct']} %)")
    if "quick" in report:
        q = report["quick"]
        print(
            f"quick: {q['trials']} trials, {q['sum_of_trial_training_s']} s of training in {q['end_to_end_s']} s on "
            f"{q['slots']} slots; not training: {q['where_the_rest_went']}; {q['utilisation']}"
        )


if __name__ == "__main__":
    main()
