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

from alphasearch.search import make_storage, optuna_study_name
from alphasearch.spec import StudySpec

CSV_COLUMNS = (
    "lane", "width", "depth", "norm", "number", "state", "outcome", "alpha_attn", "alpha_ffn", "value",
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
                for trial in storage.get_all_trials(optuna_id, deepcopy=False):
                    rows.append(_row(trial, lane, width, depth, norm))
    return rows


def _row(t: optuna.trial.FrozenTrial, lane: str, width: int, depth: int, norm: str) -> dict[str, Any]:
    attrs = t.user_attrs
    duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    return {
        "lane": lane, "width": width, "depth": depth, "norm": norm, "number": t.number, "state": t.state.name,
        "outcome": attrs.get("outcome"), "alpha_attn": t.params.get("alpha_attn"),
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
