"""Search efficiency (issue 3): how much compute adaptive search needs to match a full 7x7 log grid.

On one proxy width, a 7x7 log grid over (alpha_attn, alpha_ffn) is trained in full; its best final val
loss is the reference. Then TPE + ASHA and GP (and TPE alone) search the same space with real training,
trial after trial, and we record the compute (trial-steps actually trained, pruned trials counted for the
steps they ran) spent until the best completed trial is within 1% of the grid's best. Reported as a
fraction of the grid's compute, median over sampler seeds.

    python -m benchmarks.search_efficiency --json            # defaults below, ~15-30 min on 2 cores
    python -m benchmarks.search_efficiency --steps 60 --seeds 1   # a fast look
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alphasearch.executor import InProcessExecutor  # noqa: E402
from alphasearch.search import StudyRunner, optuna_study_name  # noqa: E402
from alphasearch.spec import StudySpec  # noqa: E402


def base_spec(args: argparse.Namespace, **over) -> StudySpec:
    fields = {
        "preset": "standard",
        "target_width": 4096,
        "target_depth": 32,
        "proxy_widths": [args.width],
        "proxy_depths": [args.depth],
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "tokens_per_trial": args.steps * args.batch_size * args.seq_len,
        "eval_interval": max(1, args.steps // 6),
        "warmup_steps": max(1, args.steps // 10),
        "lr": args.lr,
        "rmsnorm_baseline": False,
    }
    fields.update(over)
    return StudySpec.from_dict(fields)


def trials_in_order(url: str, study_id: str, spec: StudySpec) -> list[optuna.trial.FrozenTrial]:
    name = optuna_study_name(study_id, spec.proxy_widths[0], spec.proxy_depths[0])
    return sorted(optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False), key=lambda t: t.number)


def steps_of(trial: optuna.trial.FrozenTrial) -> int:
    return sum(run.get("steps_done", 0) for run in trial.user_attrs.get("runs", []))


def run_adaptive(args, url: str, label: str, sampler: str, pruner: str, seed: int, target: float, grid_steps: int):
    """Run trials until the best completed loss is within 1% of the grid's best; return compute used."""
    spec = base_spec(args, sampler=sampler, pruner=pruner, trials_per_width=args.max_trials, sampler_seed=seed)
    study_id = f"{label}-{seed}"

    def reached() -> bool:
        try:
            trials = trials_in_order(url, study_id, spec)
        except KeyError:
            return False
        return any(t.user_attrs.get("outcome") == "completed" and t.value <= target for t in trials)

    start = time.perf_counter()
    StudyRunner(spec, study_id, url, InProcessExecutor(), should_cancel=reached).run()
    used, best = 0, float("inf")
    for t in trials_in_order(url, study_id, spec):
        if t.user_attrs.get("outcome") == "cancelled":
            continue
        used += steps_of(t)
        if t.user_attrs.get("outcome") == "completed":
            best = min(best, t.value)
        if best <= target:
            break
    return {
        "seed": seed,
        "fraction_of_grid": used / grid_steps if best <= target else None,
        "trial_steps": used,
        "best": best,
        "trials": len(trials_in_order(url, study_id, spec)),
        "wall_s": time.perf_counter() - start,
    }


def _finite(value):
    """inf ("never reached the target") → None, so the output stays standard JSON."""
    if isinstance(value, float) and value == float("inf"):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-trials", type=int, default=49, help="give up after this many adaptive trials")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="alphasearch-bench-"))
    url = f"sqlite:///{tmp / 'bench.db'}"
    t0 = time.perf_counter()
    grid_spec = base_spec(args, sampler="grid", pruner="none", trials_per_width=49)
    StudyRunner(grid_spec, "grid", url, InProcessExecutor()).run()
    grid = [t for t in trials_in_order(url, "grid", grid_spec) if t.user_attrs.get("outcome") == "completed"]
    grid_best = min(t.value for t in grid)
    grid_steps = sum(steps_of(t) for t in trials_in_order(url, "grid", grid_spec))
    target = grid_best * 1.01
    out = {
        "config": vars(args),
        "grid": {"best": grid_best, "trial_steps": grid_steps, "completed": len(grid), "wall_s": time.perf_counter() - t0},
        "target": target,
        "settings": {},
    }
    for label, sampler, pruner in (("tpe+asha", "tpe", "asha"), ("gp", "gp", "none"), ("tpe", "tpe", "none")):
        runs = [run_adaptive(args, url, label, sampler, pruner, seed, target, grid_steps) for seed in range(args.seeds)]
        fractions = [r["fraction_of_grid"] if r["fraction_of_grid"] is not None else float("inf") for r in runs]
        out["settings"][label] = {"median_fraction_of_grid": statistics.median(fractions), "runs": runs}
        print(f"{label}: median fraction {statistics.median(fractions):.3f} ({fractions})", file=sys.stderr)
    best = min(out["settings"].items(), key=lambda kv: kv[1]["median_fraction_of_grid"])
    out["best_setting"] = {"name": best[0], "median_fraction_of_grid": best[1]["median_fraction_of_grid"]}
    text = json.dumps(_finite(out), indent=2)
    print(text if args.json else json.dumps(out["best_setting"]))


if __name__ == "__main__":
    main()
