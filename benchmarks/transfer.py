"""Does it transfer? Ground truth at target widths a 2-core CPU can train, against what a study predicts.

For each target width W (depth 4, its own recipe: lr `target_lr`, 150 steps of 32 x 128 bytes, normal(0, 0.02)
init, the study's embedding scale):

1. truth: the target itself is trained on a 5 x 5 log grid over the study's alpha box (seed 0), refined on
   a 3 x 3 grid at half the spacing around the best point (repeated while the best sits on the refinement's
   edge), and the best refined point and its four axis neighbours are re-run with seeds 1..S-1. The measured
   optimum is the lowest mean among those five (every seed shared: paired, common random numbers).
2. proxies: one study per lr rule, proxies at most W/4 wide, `target_lr`/`target_tokens` set to the target's
   recipe, run through the library's StudyRunner on a SQLite database (re-running resumes it).
3. evaluate: the target is trained at each study's recommended pair and at the defaults (1, 1) and
   (0.5, 0.5), seeds 0..S-1. Regret = its mean loss minus the measured optimum's, with the noise of that
   paired difference, in nats and in units of the seed std.

Every target run lands in a JSONL store (docs/transfer_runs.jsonl by default, committed): re-running trains
only what is missing and re-analyses everything.

    python -m benchmarks.transfer --json                      # targets 128 and 256, ~1-2 h on 2 cores
    python -m benchmarks.transfer --targets 128 --rules inverse_width --seeds 2   # a faster look
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.transfer_runs import Run, RunStore  # noqa: E402


@dataclass(frozen=True)
class Recipe:
    """The targets' training recipe (and, through target_lr/target_tokens, the proxies')."""

    depth: int = 4
    steps: int = 150
    batch: int = 32
    seq_len: int = 128
    warmup: int = 20
    detect_stalls: bool = True
    # 0: the store's first recipe (init std 0.0283 at every target width, transfer_runs.Run.init_std).
    # N: every target starts with its blocks at the relative size of a width-N model with the usual 0.02
    # init, std 0.02 * sqrt(N / width): the regime a real N-wide target is in, which the 0.02-at-small-width
    # recipe is not (its residual stream outgrows tanh, docs/science.md). The studies get the same std.
    init_like: int = 0

    def init_std(self, width: int) -> float:
        return 0.02 * math.sqrt(self.init_like / width) if self.init_like else 0.0


RECIPE = Recipe()
ATTN_BOX, FFN_BOX = (0.05, 4.0), (0.02, 4.0)  # the study's default alpha box
# The target's lr: the best of {2.5e-3, 5e-3, 1e-2, 2e-2} for DyT at (0.45, 0.28) in this recipe
# (docs/science.md, "Does it transfer?"), i.e. what a user who tuned their lr would train with.
DEFAULT_TARGET_LR = {128: 5e-3, 256: 5e-3, 512: 2.5e-3}
# "preset": no target_lr, the quick preset's lr at every width; "recipe": the target's lr and init std as
# they are (lr_rule same, init_scaling fixed), i.e. the target's recipe shrunk to the proxy width.
RULES = ("inverse_width", "same", "preset", "recipe")


def log_grid(lo: float, hi: float, k: int) -> list[float]:
    return [lo * (hi / lo) ** (i / (k - 1)) for i in range(k)]


def _r(x: float) -> float:
    return float(f"{x:.4g}")  # alpha values as stored keys: 4 significant digits


@dataclass
class Truth:
    width: int
    lr: float
    seeds: list[int]
    coarse: dict[tuple[float, float], float]  # seed-0 losses of every grid / refinement point
    replicated: dict[tuple[float, float], list[float]]  # point -> loss per seed (all seeds)
    best: tuple[float, float]
    best_losses: list[float]
    seed_std: float  # at the measured optimum: the unit regret is given in
    pooled_seed_std: float  # over the five replicated points (one bimodal point can inflate it)
    stalled_or_diverged: int
    rmsnorm: list[float] = field(default_factory=list)

    @property
    def best_mean(self) -> float:
        return statistics.fmean(self.best_losses)


def _run(width: int, lr: float, a: float, f: float, seed: int, norm: str = "dyt") -> Run:
    r = RECIPE
    return Run(width, r.depth, _r(a), _r(f), lr, r.steps, seed, norm=norm, batch_size=r.batch, seq_len=r.seq_len,
               warmup_steps=r.warmup, detect_stalls=r.detect_stalls, init_std=_r(r.init_std(width)))


def measure_truth(store: RunStore, width: int, lr: float, seeds: int, processes: int, log: Any,
                  grid: int = 5) -> Truth:
    """Steps 1: the target's own optimum, by brute force."""
    grid_a, grid_f = log_grid(*ATTN_BOX, grid), log_grid(*FFN_BOX, grid)
    step_a, step_f = math.sqrt(grid_a[1] / grid_a[0]), math.sqrt(grid_f[1] / grid_f[0])  # half spacing
    points = [(_r(a), _r(f)) for a in grid_a for f in grid_f]
    store.ensure([_run(width, lr, a, f, 0) for a, f in points], processes=processes, log=log)

    def seed0(p: tuple[float, float]) -> float:
        loss = store.loss(_run(width, lr, *p, 0))
        return math.inf if loss is None else loss

    best = min(points, key=seed0)
    for _ in range(4):  # refine until the best is inside its own 3 x 3
        ring = [(_r(best[0] * step_a**i), _r(best[1] * step_f**j)) for i in (-1, 0, 1) for j in (-1, 0, 1)]
        store.ensure([_run(width, lr, a, f, 0) for a, f in ring], processes=processes, log=log)
        points += [p for p in ring if p not in points]
        new = min(ring, key=seed0)
        if new == best:
            break
        best = new
    nbhd = [best, (_r(best[0] * step_a), best[1]), (_r(best[0] / step_a), best[1]),
            (best[0], _r(best[1] * step_f)), (best[0], _r(best[1] / step_f))]
    all_seeds = list(range(seeds))
    store.ensure([_run(width, lr, a, f, s) for a, f in nbhd for s in all_seeds], processes=processes, log=log)
    store.ensure([_run(width, lr, 1.0, 1.0, s, norm="rmsnorm") for s in all_seeds], processes=processes, log=log)
    replicated = {}
    for p in nbhd:
        losses = [store.loss(_run(width, lr, *p, s)) for s in all_seeds]
        if all(x is not None for x in losses):
            replicated[p] = losses
    best = min(replicated, key=lambda p: statistics.fmean(replicated[p]))
    devs = [x - statistics.fmean(v) for v in replicated.values() for x in v]
    dof = sum(len(v) - 1 for v in replicated.values())
    bad = sum(1 for p in points if store.loss(_run(width, lr, *p, 0)) is None)
    rms = [store.loss(_run(width, lr, 1.0, 1.0, s, norm="rmsnorm")) for s in all_seeds]
    return Truth(
        width, lr, all_seeds, {p: seed0(p) for p in points}, replicated, best, replicated[best],
        statistics.stdev(replicated[best]) if len(all_seeds) > 1 else math.nan,
        math.sqrt(sum(d * d for d in devs) / max(1, dof)), bad, [x for x in rms if x is not None],
    )


def study_spec(width: int, lr: float, rule: str, trials: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "preset": "quick", "target_width": width, "target_depth": RECIPE.depth, "proxy_depths": [RECIPE.depth],
        "proxy_widths": [w for w in (32, 64, 128) if w * 4 <= width],
        "alpha_attn_range": list(ATTN_BOX), "alpha_ffn_range": list(FFN_BOX),
        "trials_per_width": trials, "batch_size": RECIPE.batch, "seq_len": RECIPE.seq_len,
        "target_tokens": RECIPE.steps * RECIPE.batch * RECIPE.seq_len,
        "tokens_per_trial": RECIPE.steps * RECIPE.batch * RECIPE.seq_len, "warmup_steps": RECIPE.warmup,
        "eval_interval": min(50, RECIPE.steps),
    }
    if not RECIPE.detect_stalls:
        fields.update(detect_stalls=False, rmsnorm_baseline=False)
    if RECIPE.init_like:
        fields["target_init_std"] = _r(RECIPE.init_std(width))
    if rule == "recipe":  # the target's own recipe at the proxy width: its lr and its init std, unscaled
        fields.update(target_lr=lr, lr_rule="same", init_scaling="fixed",
                      target_init_std=_r(RECIPE.init_std(width)) or 0.02 * math.sqrt(2))
    elif rule != "preset":
        fields.update(target_lr=lr, lr_rule=rule)
    return fields


def run_study(fields: dict[str, Any], db_url: str, cache_dir: Path, log: Any) -> dict[str, Any]:
    """Step 2: one study through the library's own driver; its recommendation JSON."""
    from alphasearch.cache import ResultCache
    from alphasearch.executor import InProcessExecutor
    from alphasearch.report import build_report
    from alphasearch.search import StudyRunner
    from alphasearch.spec import StudySpec

    spec = StudySpec.from_dict(fields)
    study_id = f"transfer-{spec.fingerprint()}"
    t0 = time.perf_counter()
    with InProcessExecutor(threads=1) as ex:
        StudyRunner(spec, study_id, db_url, ex, cache=ResultCache(cache_dir)).run()
    rec = build_report(spec, study_id, db_url).recommendation.to_dict()
    log(f"  study {study_id} ({fields.get('lr_rule', 'preset')}): ({rec['alpha_attn']:.3g}, "
        f"{rec['alpha_ffn']:.3g}) in {time.perf_counter() - t0:.0f} s")
    return rec


def regret(store: RunStore, truth: Truth, pair: tuple[float, float]) -> dict[str, Any]:
    """Step 3 for one pair: the target's loss there minus at its measured optimum, paired by seed."""
    losses = [store.loss(_run(truth.width, truth.lr, *pair, s)) for s in truth.seeds]
    if any(x is None for x in losses):
        return {"pair": list(pair), "losses": losses, "regret": math.inf, "note": "stalled or diverged"}
    diffs = [x - b for x, b in zip(losses, truth.best_losses, strict=True)]
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return {
        "pair": list(pair), "losses": losses, "mean_loss": statistics.fmean(losses),
        "regret": mean, "regret_se": se, "regret_in_seed_std": mean / truth.seed_std if truth.seed_std > 0 else None,
    }


def _fmt_pair(pair: list[float]) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in pair) + ")"


def markdown(out: dict[str, Any]) -> str:
    """The "Does it transfer?" tables of docs/science.md."""
    lines = ["| target width (lr) | measured alpha* (mean of 3 seeds) | candidate | pair | regret, nats (± se) | "
             "regret / seed std | attn, ffn vs measured (x) | 90% interval at the target (attn; ffn) | evidence |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in out["targets"]:
        head = f"{t['width']} ({t['lr']:g}) | {_fmt_pair(t['measured_optimum'])}: {t['best_mean_loss']:.4f}, seed std {t['seed_std']:.4f} (pooled {t['pooled_seed_std']:.4f})"
        for name, r in {**t["defaults"], **t["studies"]}.items():
            reg = r["regret"]
            reg_s = "stalled/diverged" if not math.isfinite(reg) else f"{reg:+.4f} (± {r.get('regret_se', math.nan):.4f})"
            units = r.get("regret_in_seed_std")
            ratio = r.get("log10_ratio")
            ratio_s = ", ".join(f"{10 ** v:.2g}" for v in ratio.values()) if ratio else "—"
            iv = r.get("interval")
            iv_s = (f"{iv['alpha_attn'][0]:.2g}–{iv['alpha_attn'][1]:.2g}; {iv['alpha_ffn'][0]:.2g}–{iv['alpha_ffn'][1]:.2g}"
                    if iv else "—")
            label = name if name.startswith("(") else f"study, lr rule `{name}`"
            lines.append(f"| {head} | {label} | {_fmt_pair(r['pair'])} | {reg_s} | "
                         f"{'—' if units is None or not math.isfinite(reg) else f'{units:.1f}'} | {ratio_s} | {iv_s} | "
                         f"{r.get('evidence') or '—'} |")
            head = " | "
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global RECIPE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="128,256", help="target widths (depth 4), comma-separated")
    p.add_argument("--target-lr", default="", help="W:lr,... overriding the default target lrs")
    p.add_argument("--rules", default=",".join(RULES), help=f"proxy lr rules to compare ({', '.join(RULES)})")
    p.add_argument("--seeds", type=int, default=3, help="seeds at the optimum, its neighbours and candidates")
    p.add_argument("--grid", type=int, default=5, help="levels per axis of the target's coarse alpha grid")
    p.add_argument("--trials", type=int, default=16, help="grid trials per proxy width (a square)")
    p.add_argument("--processes", type=int, default=2, help="target runs trained at once (1 thread each)")
    p.add_argument("--store", default="docs/transfer_runs.jsonl", help="the JSONL run store (ground truth)")
    p.add_argument("--db", default="", help="database of the proxy studies (default: SQLite beside the store)")
    p.add_argument("--steps", type=int, default=RECIPE.steps, help="training steps of every run")
    p.add_argument("--batch", type=int, default=RECIPE.batch, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=RECIPE.seq_len, help="bytes per sequence")
    p.add_argument("--no-stall-check", action="store_true", help="toy runs only: never stop a run as stalled")
    p.add_argument("--init-like", type=int, default=0,
                   help="targets (and studies) init like a width-N model: std 0.02 x sqrt(N / width); 0: 0.0283")
    p.add_argument("--truth-only", action="store_true", help="measure the targets' optima, no studies")
    p.add_argument("--studies-only", action="store_true", help="run the proxy studies only (no target runs)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--markdown", action="store_true", help="print the docs/science.md tables")
    args = p.parse_args(argv)
    RECIPE = Recipe(steps=args.steps, batch=args.batch, seq_len=args.seq_len,
                    warmup=min(RECIPE.warmup, args.steps - 1), detect_stalls=not args.no_stall_check,
                    init_like=args.init_like)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    store = RunStore(args.store)
    lrs = dict(DEFAULT_TARGET_LR)
    lrs.update({int(w): float(v) for w, v in (x.split(":") for x in args.target_lr.split(",") if x)})
    db_url = args.db or f"sqlite:///{Path(args.store).with_suffix('.db').resolve()}"
    cache_dir = Path(tempfile.gettempdir()) / "alphasearch-transfer-cache"
    out: dict[str, Any] = {"command": " ".join(["python -m benchmarks.transfer", *(argv or sys.argv[1:])]),
                           "recipe": asdict(RECIPE),
                           "targets": []}
    for width in (int(w) for w in args.targets.split(",")):
        lr = lrs[width]
        log(f"== target width {width}, lr {lr}")
        if args.studies_only:
            for rule in args.rules.split(","):
                out["targets"].append({"width": width, "rule": rule, "recommendation": run_study(
                    study_spec(width, lr, rule, args.trials), db_url, cache_dir, log)})
            continue
        truth = measure_truth(store, width, lr, args.seeds, args.processes, log, args.grid)
        entry: dict[str, Any] = {
            "width": width, "lr": lr, "measured_optimum": list(truth.best), "best_mean_loss": truth.best_mean,
            "seed_std": truth.seed_std, "pooled_seed_std": truth.pooled_seed_std, "rmsnorm_mean_loss": statistics.fmean(truth.rmsnorm) if truth.rmsnorm else None,
            "grid_runs": len(truth.coarse), "grid_not_completed": truth.stalled_or_diverged,
            "replicated": {f"{a:g},{f:g}": v for (a, f), v in truth.replicated.items()},
            "defaults": {}, "studies": {},
        }
        candidates: dict[str, tuple[float, float]] = {"(1, 1)": (1.0, 1.0), "(0.5, 0.5)": (0.5, 0.5)}
        recs = {}
        if not args.truth_only:
            for rule in args.rules.split(","):
                rec = run_study(study_spec(width, lr, rule, args.trials), db_url, cache_dir, log)
                recs[rule] = rec
                candidates[rule] = (_r(rec["alpha_attn"]), _r(rec["alpha_ffn"]))
        store.ensure([_run(width, lr, *pair, s) for pair in candidates.values() for s in truth.seeds],
                     processes=args.processes, log=log)
        for name, pair in candidates.items():
            r = regret(store, truth, pair)
            if name in recs:
                rec = recs[name]
                r["log10_ratio"] = {k: math.log10(pair[i] / truth.best[i]) for i, k in enumerate(("alpha_attn", "alpha_ffn"))}
                r["interval"] = rec["interval"]
                r["evidence"] = rec.get("evidence")
                r["proxy_widths"] = rec["proxy_widths"]
                r["basis"] = rec.get("basis")
                entry["studies"][name] = r
            else:
                entry["defaults"][name] = r
        out["targets"].append(entry)
    if args.json or args.studies_only:
        print(json.dumps(out, indent=1, default=str))
    elif args.markdown:
        print(markdown(out))
    else:
        for t in out["targets"]:
            print(f"target {t['width']} (lr {t['lr']}): optimum {t['measured_optimum']} at {t['best_mean_loss']:.4f} "
                  f"(seed std {t['seed_std']:.4f}; RMSNorm {t['rmsnorm_mean_loss']})")
            for name, r in {**t["defaults"], **t["studies"]}.items():
                print(f"  {name:>14}: pair {r['pair']} regret {r['regret']:+.4f} nats "
                      f"({r.get('regret_in_seed_std')} seed std)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
