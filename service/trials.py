"""Reading a study's trials back out of Optuna's tables, for GET /studies/{id}/trials (JSON or CSV).

Goes through Optuna's storage API (not its tables) so Optuna schema changes cannot break it. One
RDBStorage per database URL per process: creating one checks Optuna's schema, which is slow.
"""

from __future__ import annotations

import csv
import io
import threading
from typing import Any

import optuna

from alphasearch.points import STALE_LIMIT
from alphasearch.search import RERUN_OF, make_storage, optuna_study_name
from alphasearch.spec import StudySpec

CSV_COLUMNS = (
    "lane", "width", "depth", "norm", "number", "state", "outcome", "reason", "alpha_attn", "alpha_ffn", "value",
    "seed_losses", "diverged_at_step", "started_at", "completed_at", "duration_s",
)  # fmt: skip

_storages: dict[str, optuna.storages.RDBStorage] = {}
_lock = threading.Lock()


def storage_for(url: str) -> optuna.storages.RDBStorage:
    with _lock:
        if url not in _storages:
            _storages[url] = make_storage(url)
        return _storages[url]


def study_trials(spec: StudySpec, study_id: str, url: str) -> list[dict[str, Any]]:
    """Every trial of every lane, in lane order then trial number."""
    storage = storage_for(url)
    rows: list[dict[str, Any]] = []
    for depth in spec.proxy_depths:
        for width in spec.proxy_widths:
            for baseline in (False, True) if spec.rmsnorm_baseline else (False,):
                name = optuna_study_name(study_id, width, depth, baseline=baseline)
                try:
                    optuna_id = storage.get_study_id_from_name(name)
                except KeyError:
                    continue  # the lane has not started
                lane = f"w{width}-d{depth}" + ("/rmsnorm" if baseline else "")
                norm = "rmsnorm" if baseline else spec.norm
                lane_trials = storage.get_all_trials(optuna_id, deepcopy=False)
                reruns = _reruns(lane_trials)
                for trial in lane_trials:
                    rows.append(_row(trial, lane, width, depth, norm, reruns.get(trial.number)))
    return rows


def _rerun_of(t: optuna.trial.FrozenTrial) -> int | None:
    """The trial this one re-runs: an interrupted point re-queued by the driver, or a stale one by Optuna."""
    number = t.user_attrs.get(RERUN_OF, t.system_attrs.get("failed_trial"))
    history = t.system_attrs.get("retry_history") or []
    return int(history[-1]) if history else (int(number) if number is not None else None)


def _reruns(trials: list[optuna.trial.FrozenTrial]) -> dict[int, int]:
    """trial number -> the number of the trial that re-runs its point."""
    return {of: t.number for t in trials if (of := _rerun_of(t)) is not None}


def _outcome(t: optuna.trial.FrozenTrial) -> str | None:
    """The recorded outcome; "stale" for a trial failed by Optuna's heartbeat machinery alone (older rows)."""
    outcome = t.user_attrs.get("outcome")
    if outcome is None and t.state == optuna.trial.TrialState.FAIL:
        return "stale"
    return outcome


def _reason(t: optuna.trial.FrozenTrial, outcome: str | None, rerun: int | None) -> str | None:
    """Why a trial ended without a result, which trial re-runs its point, or which trial it re-runs; None
    for a plain result."""
    parts = []
    origin = _rerun_of(t)
    if origin is not None:
        parts.append(f"re-run of trial #{origin}")
    if outcome in DEFAULT_REASONS:
        errors = t.user_attrs.get("errors") or []
        text = errors[-1].splitlines()[0] if errors and outcome != "pruned" else DEFAULT_REASONS[outcome]
        if outcome == "failed" and not text.startswith("worker crash"):
            text = f"the run crashed: {text}"
        parts.append(text)
    if rerun is not None:
        parts.append(f"re-run as trial #{rerun}")
    elif outcome == "stale" and len(t.system_attrs.get("retry_history") or []) >= STALE_LIMIT - 1:
        parts.append(f"not re-run: its point went stale {STALE_LIMIT} times (it may kill its driver)")
    return "; ".join(parts) or None


DEFAULT_REASONS = {
    "stale": "stale lease: the driver running this trial stopped renewing its heartbeat (it died or was killed)",
    "interrupted": "interrupted: the driver was stopped while this trial ran",
    "cancelled": "cancelled: the study was cancelled before this trial finished",
    "failed": "the run crashed without an error message",
    "pruned": "pruned: its intermediate val loss was not competitive with the other points' (the study's pruner)",
}


def _row(t: optuna.trial.FrozenTrial, lane: str, width: int, depth: int, norm: str, rerun: int | None) -> dict[str, Any]:
    attrs = t.user_attrs
    outcome = _outcome(t)
    duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    return {
        "lane": lane, "width": width, "depth": depth, "norm": norm, "number": t.number, "state": t.state.name,
        "outcome": outcome, "reason": _reason(t, outcome, rerun), "alpha_attn": t.params.get("alpha_attn"),
        "alpha_ffn": t.params.get("alpha_ffn"), "value": t.value if t.values else None,
        "seed_losses": attrs.get("seed_losses") or [], "diverged_at_step": attrs.get("diverged_at_step"),
        "started_at": t.datetime_start, "completed_at": t.datetime_complete, "duration_s": duration,
        "errors": attrs.get("errors") or [], "runs": attrs.get("runs") or [],
    }  # fmt: skip


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = []
        for col in CSV_COLUMNS:
            v = row.get(col)
            if col == "seed_losses":
                v = ";".join("" if x is None else repr(x) for x in v or [])
            elif hasattr(v, "isoformat"):
                v = v.isoformat()
            values.append("" if v is None else v)
        writer.writerow(values)
    return out.getvalue()
