"""Calibrations in the service: request fields -> settings, stored rows -> public JSON, and the lookup that
fills a StudySpec's `regimes` from stored calibrations (`use_calibration`).

The measuring itself is alphasearch/calibrate.py; the scheduler runs queued rows (service/scheduler.py) and
`alphasearch calibrate` stores rows it ran itself (service/cli.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from alphasearch.calibrate import CalibrationSettings, WidthCalibration, parse_widths, spec_with_calibrations
from alphasearch.errors import ConfigError, DataError
from alphasearch.spec import StudySpec
from service import crud
from service.models import Calibration


def settings_from_fields(fields: dict[str, Any]) -> tuple[list[int], CalibrationSettings, str]:
    """(widths, settings, corpus fingerprint) from a request's fields, or ConfigError naming the field."""
    fields = dict(fields)
    widths = parse_widths(fields.pop("widths", None))
    settings = CalibrationSettings.from_dict(fields)
    for width in widths:
        settings.check_width(width)
    return widths, settings, corpus_fingerprint(settings.corpus)


def corpus_fingerprint(corpus: str | None) -> str:
    from alphasearch.data import load_corpus

    if corpus is not None:
        try:
            exists = Path(corpus).expanduser().exists()
        except (RuntimeError, ValueError, OSError):  # "~nosuchuser/...", NUL bytes
            exists = False
        if not exists:
            raise ConfigError("corpus", f"{corpus!r} does not exist on the server; give a text file or folder the "
                                        "server can read, or leave corpus out for the default")  # fmt: skip
    try:
        return load_corpus(corpus).fingerprint
    except (DataError, OSError) as exc:
        raise ConfigError("corpus", f"{exc}; give another text file or folder") from exc


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
