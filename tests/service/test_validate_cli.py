"""`alphasearch validate` end to end through Typer's runner (the installed command's code path, in process):
a finished smoke study run by `alphasearch study run`, validated at a width beyond its proxies; the row and
its runs are stored in the data dir's database, and asking again serves every run from the cache.

The validation's runs share the run cache with tests/alphasearch/test_validation.py (same tiny recipe)."""

from __future__ import annotations

import json

import pytest
import torch
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from alphasearch.spec import StudySpec
from service.cli import app
from tests.alphasearch.test_validation import TINY

OVERRIDES = {k: v for k, v in TINY.items() if k not in ("preset", "target_width", "target_depth")}
STUDY = ["study", "run", "--preset", "smoke", "--target-width", str(TINY["target_width"]), "--target-depth",
         str(TINY["target_depth"]), "--executor", "inprocess", "--json",
         *[a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={json.dumps(v)}")]]  # fmt: skip
STUDY_ID = f"cli-{StudySpec.from_dict(TINY).fingerprint()}"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    torch.set_num_threads(1)  # two trainer threads spin against other jobs on a small shared box
    tmp = tmp_path_factory.mktemp("validate-cli")
    env = {"ALPHASEARCH_DATA_DIR": str(tmp_path_factory.getbasetemp() / "validation-data")}
    db = f"sqlite:///{tmp / 'cli.db'}"
    done = CliRunner().invoke(app, [*STUDY, "--database", db, "--out", str(tmp / "out")], env=env)
    assert done.exit_code == 0, done.output
    rec = json.loads(done.stdout[done.stdout.index("{"):])
    return {"db": db, "rec": rec, **env}  # type: ignore[dict-item]


def invoke(finished: dict, *args: str) -> object:
    return CliRunner().invoke(app, ["validate", *args, "--database", finished["db"], "--executor", "inprocess"],
                              env={"ALPHASEARCH_DATA_DIR": finished["ALPHASEARCH_DATA_DIR"]})  # fmt: skip


def test_the_study_reports_its_leave_widest_out_backtest(finished: dict) -> None:
    backtest = finished["rec"]["backtest"]
    assert backtest["status"] == "ok" and backtest["held_out_width"] == 64 and backtest["fitted_widths"] == [32]
    assert set(backtest["regret"]) == {"predicted", "(1, 1)", "(0.5, 0.5)"}
    assert all(isinstance(r["nats"], float) for r in backtest["regret"].values())


def test_bad_input_exits_2_naming_the_problem(finished: dict) -> None:
    unknown = invoke(finished, "cli-0000000000000000")
    assert unknown.exit_code == 2 and "no study with id 'cli-0000000000000000'" in unknown.output
    narrow = invoke(finished, STUDY_ID, "--width", "64")
    assert narrow.exit_code == 2 and "width: 64 is not larger than the widest proxy (64)" in " ".join(narrow.output.split())


def test_validate_trains_stores_and_reports_the_regret_with_its_noise(finished: dict) -> None:
    done = invoke(finished, STUDY_ID, "--width", "96", "--json")
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout[done.stdout.index("{"):])
    assert data["status"] == "completed" and data["width"] == 96 and data["seeds"] == 2
    result = data["result"]
    assert len(data["runs"]) == 14 and result["runs_done"] == 14
    # The recommendation validated at 96 is the study's analysis read at width 96 (smoke: 2 widths).
    assert data["plan"]["recommended"] == result["recommended"] and data["plan"]["target"] is not None
    rec = data["regret"]["recommended"]
    assert rec["nats"] >= 0 and rec["noise"] is not None or rec["is_best"]
    assert set(data["regret"]) == {"recommended", "(1, 1)", "(0.5, 0.5)"}
    engine = create_engine(finished["db"])
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, status, study_id FROM app_validations")).one()
    engine.dispose()
    assert tuple(row) == (data["id"], "completed", STUDY_ID)

    # Again, as a table: the same row, every run from the cache, the same numbers.
    again = invoke(finished, STUDY_ID, "--width", "96")
    assert again.exit_code == 0, again.output
    assert "regret of recommended" in again.stdout and "(best)" in again.stdout
    engine = create_engine(finished["db"])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, runs FROM app_validations")).all()
    engine.dispose()
    assert len(rows) == 1 and rows[0][0] == data["id"]
    runs = rows[0][1] if isinstance(rows[0][1], list) else json.loads(rows[0][1])
    assert all(r["cached"] for r in runs)
    assert [r["final_val_loss"] for r in runs] == [r["final_val_loss"] for r in data["runs"]]
