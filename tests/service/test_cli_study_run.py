"""`alphasearch study run` end to end, as a user runs it: a real subprocess, real training, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n"
ARGS = [
    "study", "run", "--preset", "smoke", "--target-width", "1024", "--target-depth", "16",
    "--executor", "inprocess", "--json",
    "--set", "proxy_depths=[1]", "--set", "tokens_per_trial=2560", "--set", "batch_size=8", "--set", "seq_len=32",
    "--set", "trials_per_width=5",
]


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALPHASEARCH_DATA_DIR": str(tmp_path / "data")}
    cmd = [sys.executable, "-m", "service.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=Path(__file__).parents[2])


def test_study_run_prints_a_recommendation_and_writes_result_and_heatmaps(tmp_path):
    out = tmp_path / "out"
    done = run_cli(tmp_path, *ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    rec = json.loads(done.stdout)
    for key in ("alpha_attn", "alpha_ffn", "alpha_final"):
        lo, hi = rec["interval"][key]
        assert lo <= rec[key] <= hi
    assert rec["width"] == 1024 and rec["proxy_widths"] == [32, 64]
    assert rec["extrapolation_factor"] == 16.0
    assert rec["warnings"]  # 5 trials per width is too few; the user is told
    result = json.loads((out / "result.json").read_text())
    assert result["recommendation"] == rec
    assert {p["width"] for p in result["per_width"]} == {32, 64}
    assert set(result["heatmaps"]) >= {"w32-d1", "w64-d1"}
    for name in ("heatmap_w32-d1.png", "heatmap_w64-d1.png", "width_fit.png"):
        assert (out / name).read_bytes().startswith(PNG)

    # Running the same command again resumes the finished study: nothing is trained twice.
    again = run_cli(tmp_path, *ARGS, "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == rec


def test_bad_input_exits_2_naming_the_field_without_a_traceback(tmp_path):
    done = run_cli(tmp_path, "study", "run", "--preset", "quick", "--target-width", "64", "--target-depth", "4")
    assert done.returncode == 2
    assert "proxy_widths" in done.stderr and "target_width" in done.stderr
    assert "Traceback" not in done.stderr
