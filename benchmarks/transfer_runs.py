"""The run store behind benchmarks/transfer.py: training runs at a *target* width, appended to a JSONL file.

One record per run: what was trained (width, depth, alphas, lr, steps, seed, norm) and what came out (final
val loss, outcome, wall time). The store is the benchmark's ground truth and is committed under docs/, so the
analysis can be re-done without re-training, and a re-run of the benchmark trains only what is missing.

A target run is built exactly as a study builds a proxy, with the study's own parametrisation evaluated AT
the target width, with the embedding scale of the study's `embed_scale` and the init std the run names
(`Run.init_std`; the store's first runs used 0.0283, see there).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Run:
    """One training run at a target width (the identity of a record in the store)."""

    width: int
    depth: int
    alpha_attn: float
    alpha_ffn: float
    lr: float
    steps: int
    seed: int
    norm: str = "dyt"
    batch_size: int = 32
    seq_len: int = 128
    warmup_steps: int = 20
    detect_stalls: bool = True  # off only for toy runs (the benchmark's smoke test)
    # The target's weight init std. 0: the store's first recipe, normal(0, 0.02 * sqrt(2)) = 0.0283 (not
    # 0.02 as first documented: a `replace` kept the init std the spec had derived for target_width = 2 x
    # width; found 2026-12-04 evening, docs/science.md). Keys of such runs carry no init.
    init_std: float = 0.0

    def key(self) -> str:
        a, f = (f"{x:.6g}" for x in (self.alpha_attn, self.alpha_ffn))
        return (f"{self.norm}|w{self.width}|d{self.depth}|a{a}|f{f}|lr{self.lr:.6g}|s{self.steps}|"
                f"b{self.batch_size}x{self.seq_len}|wu{self.warmup_steps}|seed{self.seed}"
                + ("" if self.detect_stalls else "|nostall") + (f"|init{self.init_std:.4g}" if self.init_std else ""))


def train_run(run: Run) -> dict[str, Any]:
    """Train `run` on one thread; the record the store keeps."""
    from alphasearch.executor import TrialRequest, run_request
    from alphasearch.spec import StudySpec

    spec = StudySpec.from_dict({
        "preset": "quick", "target_width": run.width * 2, "target_depth": run.depth, "proxy_widths": [32],
        "batch_size": run.batch_size, "seq_len": run.seq_len,
        "tokens_per_trial": run.steps * run.batch_size * run.seq_len,
    })
    # The target's own init: normal(0, run.init_std), or the first recipe's 0.0283 (see Run.init_std).
    model = spec.model_config(run.width, run.depth, run.alpha_attn, run.alpha_ffn,
                              norm=None if run.norm == "dyt" else run.norm)
    if run.init_std:
        model = replace(model, init_std=run.init_std)
    train = replace(spec.train_config(seed=run.seed), lr=run.lr, warmup_steps=run.warmup_steps,
                    steps=run.steps, diagnostics=False, detect_stalls=run.detect_stalls,
                    eval_interval=min(50, run.steps))
    t0 = time.perf_counter()
    result = run_request(TrialRequest.build(model, train, None), threads=1)
    return {**asdict(run), "key": run.key(), "final_val_loss": result.final_val_loss,
            "outcome": result.outcome, "wall_s": round(time.perf_counter() - t0, 1)}


class RunStore:
    """Append-only JSONL of finished runs, keyed by Run.key()."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    self.records[rec["key"]] = rec

    def get(self, run: Run) -> dict[str, Any] | None:
        return self.records.get(run.key())

    def loss(self, run: Run) -> float | None:
        rec = self.get(run)
        if rec is None or rec["outcome"] != "completed":
            return None
        return float(rec["final_val_loss"])

    def add(self, rec: dict[str, Any]) -> None:
        self.records[rec["key"]] = rec
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def ensure(self, runs: list[Run], *, processes: int = 2, log: Any = print) -> None:
        """Train every run not yet in the store, `processes` at a time (one thread each)."""
        todo = list(dict.fromkeys(r for r in runs if self.get(r) is None))
        if not todo:
            return
        log(f"training {len(todo)} target runs ({processes} at a time)")
        if processes == 1:  # here, no pool: no process start-up per call
            results: Any = map(train_run, todo)
            self._collect(results, len(todo), log)
            return
        with mp.get_context("spawn").Pool(processes) as pool:
            self._collect(pool.imap_unordered(train_run, todo), len(todo), log)

    def _collect(self, results: Any, n: int, log: Any) -> None:
        for i, rec in enumerate(results, 1):
            self.add(rec)
            log(f"  [{i}/{n}] {rec['key']}: {rec['final_val_loss']:.4f} {rec['outcome']} ({rec['wall_s']} s)")


if __name__ == "__main__":  # ad-hoc: python benchmarks/transfer_runs.py STORE width:lr[,width:lr...] a,f
    import sys

    store = RunStore(sys.argv[1])
    pairs = [tuple(p.split(":")) for p in sys.argv[2].split(",")]
    a, f = (float(x) for x in sys.argv[3].split(","))
    store.ensure([Run(int(w), 4, a, f, float(lr), 150, 0) for w, lr in pairs])
