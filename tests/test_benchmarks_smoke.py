"""Smoke test of benchmarks/train_throughput.py: it runs end to end and reports every key with a sane value.

Tiny config and budget (preset "tiny": width 64, depth 2, seq 64, batch 4; 2 timed steps, 1 repeat). No
timing is asserted: the numbers of a shared machine say nothing here; docs/benchmarks.md has the real run.
"""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("x_transformers")

from benchmarks.train_throughput import main  # noqa: E402


def test_train_throughput_reports_positive_finite_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    out = main(as_json=True, steps=2, repeats=1, warmup=1, preset="tiny")
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert printed == json.loads(json.dumps(out))
    for key in (
        "tokens_per_s",
        "peak_tflops",
        "mfu",
        "xtransformers_tokens_per_s",
        "ratio_vs_xtransformers",
        "flops_per_token",
    ):
        value = out[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
    assert out["threads"] >= 1 and out["device"] and out["torch"]
    assert out["config"]["width"] == 64 and out["config"]["seq_len"] == 64
    # the x-transformers model is the same configuration: same matmul parameter count
    assert out["config"]["matmul_params"] == out["config"]["xtransformers_matmul_params"]
    # the Linear-GEMM floor covers every nn.Linear of the tiny model: per layer qkv, proj, gate_up, down; the head
    assert sum(c for _, _, c in out["linear_shapes_in_out_count"]) == 4 * out["config"]["depth"] + 1
    for key in ("linear_gemm_floor_ms", "linear_gemm_gflops", "mfu_ceiling_linear_gemms"):
        assert math.isfinite(out[key]) and out[key] > 0, (key, out[key])
    assert len(out["samples"]["tokens_per_s"]) == len(out["samples"]["xtransformers_tokens_per_s"]) == 1
