"""Calibrations in the service: request fields -> settings, stored rows -> public JSON, and the lookup that
fills a StudySpec's `regimes` from stored calibrations (`use_calibration`).

The measuring itself is alphasearch/calibrate.py; the scheduler runs queued rows (service/scheduler.py) and
`alphasearch calibrate` stores rows it ran itself (service/cli.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from alphasearch.calibrate import CalibrationSettings, WidthCalibration, parse_widths, spec_with_calibrations
from alphasearch.errors import ConfigError, DataError
from alphasearch.spec import StudySpec
from service import crud
from service.corpora import Corpora
from service.models import Calibration


def settings_from_fields(fields: dict[str, Any], corpora: Corpora) -> tuple[list[int], CalibrationSettings, str]:
    """(widths, settings, corpus fingerprint) from a request's fields, or ConfigError naming the field.

    `corpus` must name a corpus the server owns (service/corpora.py); the settings keep its name."""
    fields = dict(fields)
    widths = parse_widths(fields.pop("widths", None))
    path = corpora.path_of(fields.get("corpus"))  # before anything reads it
    settings = CalibrationSettings.from_dict(fields)
    for width in widths:
        settings.check_width(width)
    return widths, settings, corpus_fingerprint(path, settings.corpus)


def corpus_fingerprint(path: str | None, name: str | None = None) -> str:
    """The content fingerprint of the corpus at `path` (None: the default); errors name it by `name`."""
    from alphasearch.data import load_corpus

    try:
        return load_corpus(path).fingerprint
    except (DataError, OSError) as exc:
        detail = str(exc).replace(path, repr(name)) if path else str(exc)  # never echo the server's path
        raise ConfigError("corpus", f"{detail}; give another corpus") from exc


def finder(session: Session) -> Callable[[dict[str, Any]], WidthCalibration | None]:
    """`find(key)` for alphasearch.calibrate.spec_with_calibrations, over this session's calibrations."""

    def find(key: dict[str, Any]) -> WidthCalibration | None:
        row = crud.find_calibration(session, key=key)
        return WidthCalibration.from_dict(row.result) if row is not None and row.result else None

    return find


def resolve_spec(fields: dict[str, Any], session: Session) -> StudySpec:
    """A StudySpec; with `use_calibration` its `regimes` filled from the stored calibrations (ConfigError
    naming `use_calibration` and the fix when a proxy width has none)."""
    return spec_with_calibrations(fields, finder(session))


def progress_of(row: Calibration) -> dict[str, Any]:
    total = (
        len(row.settings.get("lrs") or [])
        + int(row.settings.get("seeds") or 0)
        + int(row.settings.get("grid") or 0) ** 2
    )
    return {"phase": None, "done": 0, "total": total, "message": "", **(row.progress or {})}
