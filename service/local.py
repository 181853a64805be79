"""Run one study to completion on this machine: the CLI's `study run`, same code path as the service.

The study id is derived from the spec, so running the same command again resumes the same Optuna
studies instead of starting over.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from alphasearch.cache import ResultCache
from alphasearch.config import default_data_dir, default_database_url
from alphasearch.executor import Executor, InProcessExecutor
from alphasearch.report import StudyReport, build_report
from alphasearch.search import StudyRunner
from alphasearch.spec import StudySpec
from service.render import StudyProgress


def make_executor(name: str) -> Executor:
    """"ray": a local Ray instance (or RAY_ADDRESS's cluster); "inprocess": one trial at a time here."""
    if name == "inprocess":
        return InProcessExecutor()
    if name == "ray":
        from workers.ray_executor import RayExecutor

        return RayExecutor()
    from alphasearch.errors import ConfigError

    raise ConfigError("executor", f"got {name!r}; use 'ray' or 'inprocess'")


def run_study_locally(
    spec: StudySpec, *, database_url: str | None, executor: str, console: Console
) -> StudyReport:
    study_id = f"cli-{spec.fingerprint()}"
    url = database_url or default_database_url()
    console.print(
        f"study [bold]{study_id}[/]: {spec.total_trials} trials over widths {spec.proxy_widths}, "
        f"depths {spec.proxy_depths}; database {url}"
    )
    cache = ResultCache(default_data_dir() / "cache")
    with _sigterm_as_interrupt(), make_executor(executor) as ex, StudyProgress(console) as bars:
        StudyRunner(spec, study_id, url, ex, cache=cache, on_progress=bars.update).run()
    return build_report(spec, study_id, url)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, a container stop) stops the study like Ctrl-C does: the trials in flight are closed
    as interrupted and their points re-queued, so the next run resumes at once instead of waiting out the
    dead driver's grace period (alphasearch.search.StudyRunner.run)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live on the main thread
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sessions(database_url: str | None):  # type: ignore[no-untyped-def]
    """Sessions on the local database, migrated (the app tables hold the calibrations)."""
    from service.db import make_engine, make_sessionmaker, migrate

    engine = make_engine(database_url or default_database_url())
    migrate(engine)
    return engine, make_sessionmaker(engine)


def resolve_study_spec(fields: dict[str, Any], *, database_url: str | None) -> StudySpec:
    """StudySpec from CLI fields; with `use_calibration`, `regimes` filled from the database's calibrations."""
    if not fields.get("use_calibration"):
        return StudySpec.from_dict(fields)
    from service.calibrations import resolve_spec

    engine, sessions = _sessions(database_url)
    try:
        with sessions() as session:
            return resolve_spec(fields, session)
    finally:
        engine.dispose()


def run_calibration_locally(
    widths: list[int], settings: Any, *, database_url: str | None, executor: str, console: Console
) -> list[dict[str, Any]]:
    """Calibrate `widths` here (progress bars on `console`) and store one row per width; rows as JSON dicts
    (WidthCalibration.to_dict() plus the stored `id`)."""
    from alphasearch.calibrate import calibrate
    from service import crud
    from service.db import transaction
    from service.render import CalibrationBars

    engine, sessions = _sessions(database_url)  # before training: a broken database fails fast
    try:
        console.print(
            f"calibrating widths {widths} at depth {settings.depth}: {settings.runs_per_width} runs of "
            f"{settings.steps} steps each per width; database {database_url or default_database_url()}"
        )
        cache = ResultCache(default_data_dir() / "cache")
        with make_executor(executor) as ex, CalibrationBars(console) as bars:
            results = calibrate(widths, settings, executor=ex, cache=cache, on_progress=bars.update)
        rows = []
        with transaction(sessions) as session:
            for result in results:
                data = result.to_dict()
                row = crud.store_calibration(session, result=data, error=result.error)
                rows.append({"id": row.id, **data})
        return rows
    finally:
        engine.dispose()


def run_validation_locally(
    study_id: str, *, width: int | None, seeds: int | None, database_url: str | None, executor: str, console: Console
) -> dict[str, Any]:
    """Validate a finished study of this database here (a progress bar on `console`), storing the row and its
    runs in the database as a service validation would be; returns it as the API shows it."""
    import os
    import socket

    from alphasearch.validation import ValidationInterrupted, check_seeds, check_width
    from service import crud
    from service.api.routes.validations import validation_public
    from service.db import transaction
    from service.render import ValidationBar
    from service.validations import execute, study_spec

    url = database_url or default_database_url()
    engine, sessions = _sessions(database_url)  # before training: a broken database fails fast
    owner = f"cli:{socket.gethostname()}:{os.getpid()}"
    try:
        with transaction(sessions) as session:
            spec = study_spec(session, url, study_id)
            width, seeds = check_width(spec, width), check_seeds(seeds)
            # The CLI holds its row for a day: it renews nothing, and a scheduler on the same database must not
            # take it over mid-run. Ctrl-C releases it at once (a scheduler, or the next command, resumes it).
            row = crud.start_validation(session, study_id=study_id, width=width, seeds=seeds, owner=owner,
                                        lease_s=86_400)  # fmt: skip
            validation_id = row.id
        console.print(f"validating study [bold]{study_id}[/] at width {width} with {seeds} seed(s) per point: "
                      f"the recommendation there, (1, 1), (0.5, 0.5) and its x2 / ÷2 neighbours; database {url}")  # fmt: skip
        cache = ResultCache(default_data_dir() / "cache")
        try:
            with make_executor(executor) as ex, ValidationBar(console) as bar:
                execute(validation_id, sessions, url, owner=owner, executor=ex, cache=cache, on_run=bar.update)
        except (KeyboardInterrupt, ValidationInterrupted):
            with transaction(sessions) as session:
                crud.release_validation_lease(session, validation_id=validation_id, owner=owner)
            raise
        except Exception as exc:
            with transaction(sessions) as session:
                crud.finish_validation(session, validation_id=validation_id, owner=owner, runs=None, result=None,
                                       error=f"{type(exc).__name__}: {exc}"[:2000])  # fmt: skip
            raise
        with transaction(sessions) as session:
            stored = crud.get_validation(session, validation_id=validation_id)
            assert stored is not None
            return validation_public(stored).model_dump(mode="json")
    finally:
        engine.dispose()
