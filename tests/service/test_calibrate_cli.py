"""`alphasearch calibrate` through Typer's runner (the installed command's code path, in process): it
trains, prints JSON, stores a row per width, and `study run --set use_calibration=true` then finds it.

The runs share the session's run cache with tests/alphasearch/test_calibrate.py (same tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from service.cli import app
from tests.alphasearch.test_calibrate import TINY

ARGS = ["calibrate", "--widths", "32", "--depth", "2", "--preset", "smoke", "--lrs", "1e-3,4e-3",
        "--executor", "inprocess", "--json"] + [
    arg for key in ("steps", "batch_size", "seq_len", "warmup_steps", "eval_interval", "grid", "detect_stalls",
                    "target_width")  # the study below is for a 1024-wide target: its proxies start from that init
    for arg in ("--set", f"{key}={json.dumps(TINY[key])}")
]  # fmt: skip
STUDY = ["study", "run", "--preset", "smoke", "--target-width", "1024", "--target-depth", "8", "--executor",
         "inprocess", "--set", "proxy_depths=[2]", "--set", f"tokens_per_trial={12 * 8 * 32}", "--set", "batch_size=8",
         "--set", "seq_len=32", "--set", "use_calibration=true"]  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    torch.set_num_threads(1)  # two trainer threads spin against other jobs on a small shared box
    return {"ALPHASEARCH_DATA_DIR": str(tmp_path_factory.getbasetemp() / "calibrate-data"),
            "DB": f"sqlite:///{tmp_path / 'cli.db'}"}  # fmt: skip


def test_calibrate_prints_json_stores_the_rows_and_a_study_run_takes_the_lr(env: dict[str, str]) -> None:
    runner = CliRunner()
    env_vars = {"ALPHASEARCH_DATA_DIR": env["ALPHASEARCH_DATA_DIR"]}
    done = runner.invoke(app, [*ARGS, "--database", env["DB"]], env=env_vars)
    assert done.exit_code == 0, done.output
    [cal] = json.loads(done.stdout)["calibrations"]
    assert cal["width"] == 32 and cal["regime"]["lr"] in (1e-3, 4e-3) and cal["regime"]["steps"] == 12
    assert cal["snr"] == pytest.approx(cal["alpha_effect"] / cal["seed_std"])
    assert "width 32" in done.stderr  # the progress bar

    from service import crud
    from service.db import make_engine, make_sessionmaker

    engine = make_engine(env["DB"])
    with make_sessionmaker(engine)() as session:
        row = crud.get_calibration(session, calibration_id=cal["id"])
        assert row is not None and row.status == "completed" and row.result["regime"] == cal["regime"]
        assert (row.width, row.depth, row.steps, row.batch_size, row.seq_len) == (32, 2, 12, 8, 32)
    engine.dispose()

    # The study command finds it at width 32 ...
    from service.local import resolve_study_spec

    fields = {"preset": "smoke", "target_width": 1024, "target_depth": 8, "proxy_widths": [32], "proxy_depths": [2],
              "tokens_per_trial": 12 * 8 * 32, "batch_size": 8, "seq_len": 32, "use_calibration": True}  # fmt: skip
    spec = resolve_study_spec(fields, database_url=env["DB"])
    assert spec.regimes == {32: {"lr": cal["regime"]["lr"], "warmup_steps": cal["regime"]["warmup_steps"],
                                 "rmsnorm_lr": cal["regime"]["rmsnorm_lr"]}}
    assert spec.train_config(seed=0, width=32).lr == cal["regime"]["lr"]
    # ... and refuses width 64 before training anything, naming the field and the command to run.
    refused = runner.invoke(app, [*STUDY, "--database", env["DB"]], env=env_vars)  # smoke: widths 32 and 64
    assert refused.exit_code == 2
    text = " ".join(refused.stderr.split())
    assert (
        "use_calibration" in text and "alphasearch calibrate --widths 64" in text and "Traceback" not in text
    )


def test_calibrate_rejects_bad_input_naming_the_field(env: dict[str, str]) -> None:
    runner = CliRunner()
    for args, field in ((["--widths", "48"], "widths"), (["--widths", "64", "--lrs", "fast"], "lrs"),
                        (["--widths", "64", "--seeds", "2"], "seeds")):  # fmt: skip
        done = runner.invoke(app, ["calibrate", *args, "--database", env["DB"]],
                             env={"ALPHASEARCH_DATA_DIR": env["ALPHASEARCH_DATA_DIR"]})  # fmt: skip
        assert done.exit_code == 2, done.output
        assert field in done.stderr and "Traceback" not in done.stderr


def test_calibrate_help_states_the_real_default_ladder() -> None:
    """The --lrs help names the ladder the library really uses (it once named an older one)."""
    import re
    import typing

    from alphasearch.calibrate import CALIBRATION_DEFAULTS
    from service.cli import calibrate

    option = typing.get_type_hints(calibrate, include_extras=True)["lrs"].__metadata__[0]
    match = re.search(r"\(default ([^)]*)\)", option.help)
    assert match, option.help
    assert [float(x) for x in match.group(1).split(",")] == CALIBRATION_DEFAULTS["lrs"]
