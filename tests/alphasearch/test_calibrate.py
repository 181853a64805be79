"""alphasearch.calibrate on tiny sizes with the real trainer: the lr ladder, seed noise, the alpha grid, the
numbers derived from them, the cache, stopping, and how a StudySpec takes a calibrated regime per width."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from alphasearch.cache import ResultCache
from alphasearch.calibrate import (
    SETTINGS_KEYS,
    CalibrationInterrupted,
    CalibrationSettings,
    RunSummary,
    WidthCalibration,
    _choose_lr,
    calibrate,
    calibration_key,
    parse_widths,
    spec_with_calibrations,
)
from alphasearch.errors import ConfigError
from alphasearch.executor import Executor, InProcessExecutor, TrialRequest
from alphasearch.search import StudyRunner
from alphasearch.spec import PRESETS, StudySpec

# 10 runs of 12 steps of a 32-wide, 2-block model: 2 lrs x 2 norms + 2 more seeds + a 2 x 2 grid. Far too short to mean
# anything (hence no stall detection); it exercises every step of the real procedure in seconds.
TINY: dict[str, Any] = {
    "preset": "smoke", "depth": 2, "lrs": [1e-3, 4e-3], "steps": 12, "batch_size": 8, "seq_len": 32,
    "warmup_steps": 2, "eval_interval": 6, "grid": 2, "detect_stalls": False, "target_width": 1024,
}  # fmt: skip


def one_thread() -> InProcessExecutor:
    """Trainer threads: 1. On a small shared box two torch threads spin against other jobs (5x slower)."""
    return InProcessExecutor(threads=1)


def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> ResultCache:
    """One run cache for the whole test session (the service's calibration tests use the same runs)."""
    return ResultCache(tmp_path_factory.getbasetemp() / "calibrate-data" / "cache")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[WidthCalibration, list[Any]]:
    events: list[Any] = []
    [cal] = calibrate([32], CalibrationSettings.from_dict(TINY), executor=one_thread(),
                      cache=shared_cache(tmp_path_factory), on_progress=events.append)  # fmt: skip
    return cal, events


# -- settings ------------------------------------------------------------------------------------------


def test_settings_take_the_ladder_defaults_and_the_presets_regime() -> None:
    quick = CalibrationSettings.from_dict({})
    p = PRESETS["quick"]
    assert quick.preset == "quick" and quick.lrs == [2.5e-3, 5e-3, 1e-2, 2e-2]
    assert (quick.steps, quick.batch_size, quick.seq_len) == (
        p["tokens_per_trial"] // (p["batch_size"] * p["seq_len"]), p["batch_size"], p["seq_len"])  # fmt: skip
    assert (quick.warmup_steps, quick.depth, quick.detect_stalls) == (
        p["warmup_steps"],
        p["proxy_depths"][0],
        True,
    )
    assert (quick.seeds, quick.alpha, quick.grid) == (3, [0.5, 0.5], 3)
    assert quick.alpha_attn_range == list(StudySpec.__dataclass_fields__["alpha_attn_range"].default)
    assert quick.runs_per_width == 2 * 4 + 3 - 1 + 9  # RMSNorm + DyT per lr; DyT's chosen-lr run is seed 0
    assert CalibrationSettings.from_dict({"warmup_steps": 0}).warmup_steps == 0  # 0 is a choice, not "unset"
    smoke = CalibrationSettings.from_dict({"preset": "smoke", "lrs": [4e-3, 1e-3]})
    assert smoke.detect_stalls is False and smoke.lrs == [1e-3, 4e-3]
    assert len(CalibrationSettings.from_dict({"grid": 3}).grid_points()) == 9
    assert parse_widths("128, 64") == [64, 128]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"lrs": [0.002, -1]}, "lrs"),
        ({"lrs": [0.002, 0.002]}, "lrs"),
        ({"seeds": 2}, "seeds"),  # a std from 2 runs is mostly noise itself
        ({"alpha": [0.5]}, "alpha"),
        ({"alpha_ffn_range": [4.0, 0.02]}, "alpha_ffn_range"),
        ({"grid": 1}, "grid"),
        ({"preset": "huge"}, "preset"),
        ({"norm": "rmsnorm"}, "norm"),
        ({"steps": 10**6, "preset": "smoke"}, "steps"),  # over the preset's token cap
        ({"colour": "red"}, "colour"),
        ({"detect_stalls": "yes"}, "detect_stalls"),
    ],
)
def test_invalid_settings_name_the_field_and_the_fix(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        CalibrationSettings.from_dict(fields)
    assert err.value.field == field and err.value.message


@pytest.mark.parametrize(("widths", "fragment"), [("48", "multiple of head_dim"), ("64,64", "duplicates"),
                                                   ("", "at least one"), ("6x", "not an integer")])  # fmt: skip
def test_bad_widths_name_the_widths_field(widths: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        for w in parse_widths(widths):
            CalibrationSettings.from_dict({}).check_width(w)
    assert err.value.field == "widths" and fragment in err.value.message


def test_calibration_runs_are_the_runs_a_study_makes() -> None:
    """Built through StudySpec: same model (init included) and same training as a calibrated study's."""
    settings = CalibrationSettings.from_dict({**TINY, "target_width": 1024})
    spec = StudySpec.from_dict(
        {**STUDY, "eval_interval": 6, "regimes": {"32": {"lr": 4e-3, "warmup_steps": 2}}}
    )
    assert settings.model_config(32, "dyt", 0.3, 0.7) == spec.model_config(32, 2, 0.3, 0.7)
    assert settings.model_config(32, "rmsnorm", 1.0, 1.0) == spec.model_config(
        32, 2, 1.0, 1.0, norm="rmsnorm"
    )
    assert settings.train_config(width=32, lr=4e-3, seed=5) == spec.train_config(seed=5, width=32)
    with pytest.raises(ConfigError, match="target_width") as err:
        settings.check_width(1024)
    assert err.value.field == "widths"


# -- one real calibration --------------------------------------------------------------------------------


def test_the_lr_is_dyts_best_where_rmsnorm_trains_and_the_baseline_keeps_its_own(calibrated) -> None:
    cal, _ = calibrated
    assert cal.ok and cal.width == 32 and cal.depth == 2 and cal.norm == "dyt"
    assert [(r.norm, r.lr, r.seed, r.alpha_attn) for r in cal.ladder] == [
        ("rmsnorm", 1e-3, 0, None),
        ("dyt", 1e-3, 0, 0.5),
        ("rmsnorm", 4e-3, 0, None),
        ("dyt", 4e-3, 0, 0.5),
    ]
    rms_ok = {r.lr for r in cal.ladder if r.norm == "rmsnorm" and r.outcome != "diverged"}
    best_dyt = min((r for r in cal.ladder if r.norm == "dyt" and r.lr in rms_ok and r.outcome == "completed"),
                   key=lambda r: r.final_val_loss)  # fmt: skip
    best_rms = min((r for r in cal.ladder if r.norm == "rmsnorm" and r.outcome != "diverged"),
                   key=lambda r: r.final_val_loss)  # fmt: skip
    assert cal.regime == {"lr": best_dyt.lr, "warmup_steps": 2, "steps": 12, "batch_size": 8, "seq_len": 32,
                          "rmsnorm_lr": best_rms.lr}  # fmt: skip
    assert cal.baseline_loss == best_rms.final_val_loss
    assert cal.study_regime() == {"lr": best_dyt.lr, "warmup_steps": 2, "rmsnorm_lr": best_rms.lr}


def test_seed_noise_alpha_effect_snr_gap_and_stalls_come_from_the_runs(calibrated) -> None:
    cal, _ = calibrated
    lr = cal.regime["lr"]
    assert [(r.seed, r.alpha_attn, r.alpha_ffn, r.lr) for r in cal.seed_runs] == [
        (s, 0.5, 0.5, lr) for s in (0, 1, 2)
    ]
    seed_losses = [r.final_val_loss for r in cal.seed_runs if r.outcome == "completed"]
    assert len(seed_losses) >= 2 and len(set(seed_losses)) > 1, "other seeds must give other losses"
    assert cal.seed_std == pytest.approx(statistics.stdev(seed_losses))
    assert {(r.alpha_attn, r.alpha_ffn) for r in cal.grid_runs} == {
        (0.05, 0.02),
        (0.05, 4.0),
        (4.0, 0.02),
        (4.0, 4.0),
    }
    assert all(r.lr == lr and r.seed == 0 and r.norm == "dyt" for r in cal.grid_runs)
    done = [r for r in cal.grid_runs if r.outcome == "completed"]
    losses = [r.final_val_loss for r in done]
    assert cal.alpha_effect == pytest.approx(max(losses) - min(losses)) and cal.alpha_effect > 0
    best = min(done, key=lambda r: r.final_val_loss)
    assert cal.best == {
        "alpha_attn": best.alpha_attn,
        "alpha_ffn": best.alpha_ffn,
        "loss": best.final_val_loss,
    }
    assert cal.gap == pytest.approx((best.final_val_loss - cal.baseline_loss) / cal.baseline_loss)
    assert cal.snr == pytest.approx(cal.alpha_effect / cal.seed_std)
    assert cal.stalled == 0 and cal.stall_rate == 0.0  # stall detection is off for these toy runs
    assert cal.diverged == sum(r.outcome == "diverged" for r in cal.grid_runs)


def test_progress_reports_every_run_in_phase_order(calibrated) -> None:
    _, events = calibrated
    runs = [e for e in events if e.phase != "done"]
    assert [e.done for e in events if e.done] == sorted(e.done for e in events if e.done)
    # 2 lrs x (RMSNorm, DyT) + 2 more seeds (seed 0 is DyT's ladder run at the chosen lr) + a 2 x 2 grid
    assert max(e.done for e in events) == 10 and all(e.total == 10 for e in events)
    order = [e.phase for e in runs]
    assert order.index("seed noise") > max(i for i, p in enumerate(order) if p == "lr ladder")
    assert events[-1].phase == "done" and events[-1].done == 10


def test_the_result_round_trips_through_json(calibrated) -> None:
    import json

    cal, _ = calibrated
    again = WidthCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again.to_dict() == cal.to_dict()
    assert again.regime == cal.regime and again.ladder == cal.ladder


class _NoTraining(Executor):
    """An executor that refuses work: proves a calibration was served entirely from the cache."""

    def submit(self, request: TrialRequest, on_progress: Any) -> int:
        raise AssertionError(f"trained {request.label!r}; it should have come from the cache")

    def poll(self, timeout: float | None) -> list:
        return []

    def stop(self, handle: int, reason: str) -> None:
        pass


def test_a_repeated_calibration_is_served_from_the_run_cache(calibrated, tmp_path_factory) -> None:
    cal, _ = calibrated
    [again] = calibrate([32], CalibrationSettings.from_dict(TINY), executor=_NoTraining(),
                        cache=shared_cache(tmp_path_factory))  # fmt: skip
    assert again.regime == cal.regime and again.seed_std == cal.seed_std and again.grid_runs == cal.grid_runs


def test_should_stop_interrupts_and_caches_nothing_it_cut_short(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    with pytest.raises(CalibrationInterrupted):
        calibrate([32], CalibrationSettings.from_dict(TINY), executor=one_thread(), cache=cache,
                  should_stop=lambda: True)  # fmt: skip
    assert not any((tmp_path / "cache").rglob("*.json"))


def test_no_stable_lr_is_a_result_naming_the_lrs_field() -> None:
    from alphasearch.calibrate import _summarise

    settings = CalibrationSettings.from_dict(TINY)
    diverged = [
        RunSummary("rmsnorm", lr, 0, None, None, "diverged", None, 3, diverged_at_step=3)
        for lr in settings.lrs
    ]
    lr, notes = _choose_lr(diverged)
    assert lr is None
    cal = _summarise(32, settings, "fp", "code", diverged, (lr, notes), [], [])
    assert not cal.ok and cal.regime is None and "`lrs`" in cal.error and "smaller" in cal.error
    with pytest.raises(Exception, match="no calibrated regime"):
        cal.study_regime()
    ok = [RunSummary("rmsnorm", 1e-3, 0, None, None, "completed", 3.0, 12),
          RunSummary("rmsnorm", 4e-3, 0, None, None, "completed", 2.9, 12),
          RunSummary("rmsnorm", 8e-3, 0, None, None, "diverged", None, 4, diverged_at_step=4)]  # fmt: skip
    # Without DyT runs the baseline's best lr is used, and the note says why.
    lr, notes = _choose_lr(ok)
    assert lr == 4e-3 and "no DyT/Derf ladder run completed" in notes[0]
    dyt = [RunSummary("dyt", 1e-3, 0, 0.5, 0.5, "completed", 3.1, 12),
           RunSummary("dyt", 4e-3, 0, 0.5, 0.5, "completed", 3.3, 12),
           RunSummary("dyt", 8e-3, 0, 0.5, 0.5, "completed", 2.5, 12)]  # fmt: skip
    # DyT's best lr wins, except where RMSNorm diverged (8e-3); 1e-3 is the ladder's edge, which is said.
    lr, notes = _choose_lr(ok + dyt)
    assert lr == 1e-3 and "best dyt lr (0.001) is the smallest" in notes[0] and "`lrs`" in notes[0]
    lr, notes = _choose_lr(ok[:2] + dyt[1:2])
    assert lr == 4e-3 and "largest in the ladder" in notes[0] and "`lrs`" in notes[0]


# -- a study that uses it ----------------------------------------------------------------------------------


STUDY = {"preset": "smoke", "target_width": 1024, "target_depth": 8, "proxy_widths": [32, 64], "proxy_depths": [2],
         "tokens_per_trial": 12 * 8 * 32, "batch_size": 8, "seq_len": 32, "warmup_steps": 5}  # fmt: skip


def _finder(cals: list[WidthCalibration]):
    """Finds a calibration the way the service's database lookup does: every key column must match."""
    seen: list[dict[str, Any]] = []

    def find(key: dict[str, Any]) -> WidthCalibration | None:
        seen.append(key)
        for c in cals:
            have = {"width": c.width, "depth": c.depth, "norm": c.norm, "attention": c.attention,
                    "embed_scale": c.embed_scale, "corpus_fingerprint": c.corpus_fingerprint,
                    "code_version": c.code_version, **{k: c.regime[k] for k in ("steps", "batch_size", "seq_len")},
                    **{k: c.settings.get(k, default) for k, default in SETTINGS_KEYS.items()}}  # fmt: skip
            if have == key:
                return c
        return None

    find.seen = seen  # type: ignore[attr-defined]
    return find


def test_use_calibration_fills_regimes_and_train_config_applies_them_per_width(calibrated) -> None:
    cal, _ = calibrated
    spec = spec_with_calibrations({**STUDY, "proxy_widths": [32], "use_calibration": True}, _finder([cal]))
    assert spec.regimes == {32: cal.study_regime()}
    cfg = spec.train_config(seed=1, width=32)
    assert (cfg.lr, cfg.warmup_steps, cfg.seed) == (cal.regime["lr"], cal.regime["warmup_steps"], 1)
    assert spec.train_config(seed=1).lr == spec.lr  # no width: the spec's own lr
    # Explicit regimes win over calibrated ones; widths without a calibration may be given by hand.
    manual = spec_with_calibrations({**STUDY, "use_calibration": True, "regimes": {"64": {"lr": 0.0123}}},
                                    _finder([cal]))  # fmt: skip
    assert manual.regimes == {32: cal.study_regime(), 64: {"lr": 0.0123}}
    assert manual.train_config(seed=0, width=64).lr == 0.0123
    assert manual.train_config(seed=0, width=64).warmup_steps == 5  # warmup not overridden: the spec's
    assert StudySpec.from_dict(manual.to_dict()).regimes == manual.regimes  # JSON gives string keys back


def test_a_width_without_a_calibration_is_refused_naming_the_field_and_the_command(calibrated) -> None:
    cal, _ = calibrated
    find = _finder([cal])
    with pytest.raises(ConfigError) as err:
        spec_with_calibrations({**STUDY, "use_calibration": True}, find)
    assert err.value.field == "use_calibration"
    assert "alphasearch calibrate --widths 64 --depth 2 --preset smoke" in err.value.message
    assert "--set steps=12 --set batch_size=8 --set seq_len=32" in err.value.message
    assert "use_calibration=false" in err.value.message
    assert find.seen[0] == calibration_key(StudySpec.from_dict(STUDY), 32)
    # Another run length is another regime: a calibration at 12 steps does not set the lr for 24.
    with pytest.raises(ConfigError, match="use_calibration"):
        spec_with_calibrations({**STUDY, "proxy_widths": [32], "tokens_per_trial": 24 * 8 * 32,
                                "use_calibration": True}, find)  # fmt: skip
    # The proxies' init depends on the target width and the init scaling: a calibration made for one target
    # (or scaling) does not set the lr of proxies built for another; the fix names the settings to use.
    for other, fix in (({"target_width": 2048}, "--set target_width=2048"),
                       ({"init_scaling": "fixed"}, "--set init_scaling=fixed")):  # fmt: skip
        with pytest.raises(ConfigError, match="use_calibration") as err:
            spec_with_calibrations({**STUDY, "proxy_widths": [32], "use_calibration": True, **other}, find)
        assert fix in err.value.message
    # The library alone cannot look anything up: use_calibration without regimes says what to do.
    with pytest.raises(ConfigError, match="alphasearch calibrate --widths 32,64") as err:
        StudySpec.from_dict({**STUDY, "use_calibration": True})
    assert err.value.field == "use_calibration"


@pytest.mark.parametrize(
    "regimes",
    [{"128": {"lr": 0.002}}, {"32": {"lr": -1}}, {"32": {"momentum": 0.9}}, {"32": {}}, {"x": {"lr": 0.002}},
     {"32": {"warmup_steps": 2.5}}, {"32": {"lr": math.inf}}, [1, 2]],
)  # fmt: skip
def test_invalid_regimes_name_the_regimes_field(regimes: Any) -> None:
    with pytest.raises(ConfigError) as err:
        StudySpec.from_dict({**STUDY, "regimes": regimes})
    assert err.value.field == "regimes" and "use " in err.value.message  # what is wrong and what to give


def test_the_study_runner_trains_each_width_at_its_regime(tmp_path: Path, monkeypatch) -> None:
    """The one call site in search.py: a width's runs use its regime's lr (found under that key in the cache)."""
    monkeypatch.setenv("ALPHASEARCH_DATA_DIR", str(tmp_path))
    spec = StudySpec.from_dict({**STUDY, "proxy_widths": [32], "trials_per_width": 1, "sampler": "random",
                                "tokens_per_trial": 4 * 8 * 32, "eval_interval": 2,
                                "regimes": {"32": {"lr": 0.0077, "warmup_steps": 1}}})  # fmt: skip
    cache = ResultCache(tmp_path / "cache")
    assert (
        StudyRunner(spec, "cal", f"sqlite:///{tmp_path / 'db.sqlite'}", one_thread(), cache=cache).run()
        == "completed"
    )
    [path] = (tmp_path / "cache").rglob("*.json")
    key = path.stem
    import optuna

    trial = optuna.load_study(
        study_name="alphasearch/cal/w32-d2", storage=f"sqlite:///{tmp_path / 'db.sqlite'}"
    ).trials[0]
    model = spec.model_config(32, 2, trial.params["alpha_attn"], trial.params["alpha_ffn"])
    with_regime = TrialRequest.build(model, spec.train_config(seed=0, width=32), spec.corpus)
    without = TrialRequest.build(model, spec.train_config(seed=0), spec.corpus)
    assert with_regime.train["lr"] == 0.0077 and with_regime.train["warmup_steps"] == 1
    assert key == with_regime.key() != without.key()
