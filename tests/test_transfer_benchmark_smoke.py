"""Smoke test of benchmarks/transfer.py: ground truth, a proxy study and the regret table, end to end.

Toy recipe (3 steps of 2 x 16 bytes, no stall check): the numbers mean nothing, the plumbing is what is
checked: every run lands in the store, a re-run trains nothing new, and regret is measured against the
measured optimum with paired seeds. docs/science.md has the real run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.transfer import main
from benchmarks.transfer_runs import RunStore


def test_transfer_benchmark_runs_end_to_end_and_resumes_from_its_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.jsonl"
    argv = ["--targets", "128", "--rules", "inverse_width", "--seeds", "2", "--trials", "4", "--processes", "1",
            "--grid", "3", "--steps", "3", "--batch", "2", "--seq-len", "16", "--no-stall-check", "--store", str(store), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    [target] = out["targets"]
    assert target["width"] == 128 and target["grid_runs"] >= 9
    best = target["measured_optimum"]
    # the measured optimum is the lowest mean over the replicated points, each with every seed
    means = {k: sum(v) / len(v) for k, v in target["replicated"].items()}
    assert len(means) >= 2 and all(len(v) == 2 for v in target["replicated"].values())
    assert means[f"{best[0]:g},{best[1]:g}"] == pytest.approx(min(means.values()))
    study = target["studies"]["inverse_width"]
    assert study["proxy_widths"] == [32]  # at most a quarter of the target width
    for r in [study, *target["defaults"].values()]:
        assert len(r["losses"]) == 2
        if all(x is not None for x in r["losses"]):  # regret of the optimum against itself would be 0
            assert math.isfinite(r["regret"])
            assert r["mean_loss"] - target["best_mean_loss"] == pytest.approx(r["regret"])
    trained = len(RunStore(store).records)
    assert main(argv) == 0  # a second run trains nothing new
    capsys.readouterr()
    assert len(RunStore(store).records) == trained


def test_targets_initialised_like_a_wider_model_and_the_recipe_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--init-like N trains every target at std 0.02 x sqrt(N / W) (its runs keyed apart from the default
    recipe's) and gives the studies the same target_init_std; the "recipe" rule runs its proxies at the
    target's own lr and init std."""
    store = tmp_path / "runs.jsonl"
    argv = ["--targets", "128", "--rules", "recipe", "--seeds", "2", "--trials", "4", "--processes", "1",
            "--grid", "3", "--steps", "3", "--batch", "2", "--seq-len", "16", "--no-stall-check", "--init-like",
            "512", "--store", str(store), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    [target] = out["targets"]
    assert out["recipe"]["init_like"] == 512 and target["studies"]["recipe"]["proxy_widths"] == [32]
    records = RunStore(store).records
    assert records and all(r["key"].endswith("|init0.04") for r in records.values()), list(records)[:3]
    assert all(r["init_std"] == pytest.approx(0.02 * math.sqrt(512 / 128)) for r in records.values())
