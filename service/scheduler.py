"""The scheduler: drives queued studies through `StudyRunner` on an executor, with all state in the DB.

Runs inside `alphasearch serve` (a background thread, the default) or alone as `alphasearch scheduler`
for a separate deployment; any number of schedulers may share one database.

- Claiming is one guarded UPDATE (`crud.claim`): two schedulers never run one study.
- A running study is held through a lease renewed every lease/3 seconds by a keeper thread, independent of
  how long a trial blocks the runner. When a scheduler dies its leases lapse and any scheduler (the
  restarted service included) resumes the study. StudyRunner resumes from Optuna: finished trials are
  kept, and trials left RUNNING by the dead driver are failed and re-queued with the same alphas after
  Optuna's grace period (alphasearch.search.GRACE_PERIOD_S), so nothing is lost and nothing runs twice.
- Cancel sets `cancel_requested`; the runner's `should_cancel` reads it (at most once a second).
- Stopping the scheduler (service shutdown) interrupts the runner the way Ctrl-C interrupts `study run`:
  in-flight points are re-queued, the study stays `running` and its lease is released, so the next start
  resumes it at once.
- When a study completes, the scheduler (never a request handler) runs the analysis and renders the PNGs,
  and stores both with the study.
- Calibrations (POST /calibrations, one row per proxy width) go through the same claim + lease protocol and
  the same executor; a queued calibration is taken before a queued study (a calibration is short, and the
  studies a user submits next with `use_calibration` need it). A stopped or dead scheduler's calibration is
  run again from the start by the next one; its finished runs come from the ResultCache, so nothing trains
  twice.
- Validations (POST /studies/{id}/validations: a finished study's recommendation trained wider than its
  proxies, service/validations.py) go through the same claim + lease protocol, after calibrations and
  before studies (a user waits on them), and resume the same way as calibrations: from the cache.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from alphasearch.cache import ResultCache, json_safe
from alphasearch.executor import Executor
from alphasearch.search import LaneProgress, StudyRunner
from alphasearch.spec import StudySpec
from service import crud
from service.corpora import Corpora
from service.db import transaction
from service.local import make_executor
from service.models import utcnow
from service.settings import Settings

log = logging.getLogger(__name__)

PROGRESS_WRITE_S = 2.0  # progress rows are written at most this often (and whenever a trial finishes)
CANCEL_CHECK_S = 1.0  # the cancel flag is read at most this often


class SchedulerStopping(KeyboardInterrupt):
    """Raised from `should_cancel` to stop a study for a shutdown, not for good.

    A KeyboardInterrupt on purpose: that is StudyRunner's interrupt protocol (search.py), which closes the
    trials in flight as "interrupted" and re-queues their alpha points, so the next start resumes at once
    and nothing is counted twice or lost.
    """


def analyse(spec: StudySpec, study_id: str, database_url: str) -> dict[str, Any]:
    """Report, recommendation, per-width optima and every PNG of a finished study (CPU-heavy)."""
    from alphasearch import plots
    from alphasearch.report import build_report

    report = build_report(spec, study_id, database_url)
    figures = {key: plots.heatmap_png(grid) for key, grid in report.heatmaps.items()}
    figures["width-fit"] = plots.width_fit_png(report.optima, report.fits, report.recommendation)
    report_dict = report.to_dict()
    return {
        "recommendation": report_dict["recommendation"],
        "report": report_dict,
        "optima": [json_safe(o.to_dict()) for o in report.optima],
        "figures": figures,
    }


class _StudyWatch:
    """The runner's on_progress / should_cancel hooks for one study: progress, ETA, cancel, stop."""

    def __init__(self, scheduler: Scheduler, study_id: str, total: int) -> None:
        self.scheduler, self.study_id, self.total = scheduler, study_id, total
        self.started = time.monotonic()
        self.done_at_start: int | None = None
        self.last_done = -1
        self.last_write = 0.0
        self.last_cancel_check = 0.0
        self.cancel = False

    def on_progress(self, lanes: list[LaneProgress]) -> None:
        done, total = sum(lane.done for lane in lanes), sum(lane.total for lane in lanes)
        now = time.monotonic()
        if self.done_at_start is None:
            self.done_at_start, self.started = done, now
        if done == self.last_done and now - self.last_write < PROGRESS_WRITE_S:
            return
        ran = done - self.done_at_start
        eta = (total - done) * (now - self.started) / ran if ran > 0 else None
        rows = [{"label": lane.label, "done": lane.done, "total": lane.total, "best": lane.best} for lane in lanes]
        with transaction(self.scheduler.sessions) as s:
            crud.record_progress(
                s, study_id=self.study_id, owner=self.scheduler.owner, done=done, total=total,
                lanes=json_safe(rows), eta_s=eta,
            )  # fmt: skip
        self.scheduler.on_change(self.study_id)
        self.last_done, self.last_write, self.total = done, now, total

    def should_cancel(self) -> bool:
        if self.scheduler.stopping.is_set():
            raise SchedulerStopping
        now = time.monotonic()
        if not self.cancel and now - self.last_cancel_check >= CANCEL_CHECK_S:
            self.last_cancel_check = now
            with transaction(self.scheduler.sessions) as s:
                self.cancel = crud.is_cancel_requested(s, study_id=self.study_id)
        return self.cancel


class Scheduler:
    """Claims studies from the database and runs them, `settings.scheduler_slots` at a time.

        >>> scheduler = Scheduler(Settings(executor="inprocess"), make_sessionmaker(engine))  # doctest: +SKIP
        >>> scheduler.start(); ...; scheduler.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        executor_factory: Callable[[str], Executor] = make_executor,
        on_finished: Callable[[str, str], None] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.settings, self.sessions = settings, sessions
        self.executor_factory = executor_factory
        self.on_finished = on_finished
        self.on_change = on_change or (lambda study_id: None)  # told after every write to a study
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        if settings.ray_address and not os.environ.get("RAY_ADDRESS"):
            os.environ["RAY_ADDRESS"] = settings.ray_address  # workers.cluster.connect reads the environment
        self.stopping = threading.Event()
        self._held: set[str] = set()
        self._held_calibrations: set[str] = set()
        self._held_validations: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self.stopping.clear()
        self._threads = [threading.Thread(target=self._keep_leases, name="alphasearch-leases", daemon=True)]
        for slot in range(self.settings.scheduler_slots):
            self._threads.append(threading.Thread(target=self._loop, name=f"alphasearch-scheduler-{slot}", daemon=True))
        for thread in self._threads:
            thread.start()
        log.info("scheduler %s started (%s executor, %d slot(s))", self.owner, self.settings.executor,
                 self.settings.scheduler_slots)  # fmt: skip

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every slot to stop; a slot in the middle of a trial stops when that trial's step returns."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("scheduler threads still busy at shutdown: %s (their leases will lapse)", ", ".join(alive))

    def _loop(self) -> None:
        _lower_priority(self.settings.scheduler_nice)
        while not self.stopping.is_set():
            try:
                ran = self.run_next()
            except Exception:  # a database hiccup must not kill the scheduler thread
                log.exception("scheduler loop error; retrying")
                ran = None
            if ran is None:
                self.stopping.wait(self.settings.scheduler_poll_s)

    def _keep_leases(self) -> None:
        interval = self.settings.scheduler_lease_s / 3
        while not self.stopping.wait(interval):
            with self._lock:
                held = list(self._held)
            for study_id in held:
                try:
                    with transaction(self.sessions) as s:
                        kept = crud.renew_lease(s, study_id=study_id, owner=self.owner, now=utcnow(),
                                                lease_s=self.settings.scheduler_lease_s)  # fmt: skip
                    if not kept:
                        log.warning("lost the lease on study %s (finished, or taken over after a stall)", study_id)
                except Exception:
                    log.exception("could not renew the lease on study %s", study_id)
            with self._lock:
                held_calibrations = list(self._held_calibrations)
            for calibration_id in held_calibrations:
                try:
                    with transaction(self.sessions) as s:
                        crud.renew_calibration_lease(s, calibration_id=calibration_id, owner=self.owner, now=utcnow(),
                                                     lease_s=self.settings.scheduler_lease_s)  # fmt: skip
                except Exception:
                    log.exception("could not renew the lease on calibration %s", calibration_id)
            with self._lock:
                held_validations = list(self._held_validations)
            for validation_id in held_validations:
                try:
                    with transaction(self.sessions) as s:
                        crud.renew_validation_lease(s, validation_id=validation_id, owner=self.owner, now=utcnow(),
                                                    lease_s=self.settings.scheduler_lease_s)  # fmt: skip
                except Exception:
                    log.exception("could not renew the lease on validation %s", validation_id)

    # -- one study ------------------------------------------------------------------------------------
    def claim_next(self) -> str | None:
        now = utcnow()
        with transaction(self.sessions) as s:
            candidates = crud.claimable(s, now=now)
        for study_id in candidates:
            with transaction(self.sessions) as s:
                claimed = crud.claim(s, study_id=study_id, owner=self.owner, now=now, lease_s=self.settings.scheduler_lease_s)
            if claimed:
                with self._lock:
                    self._held.add(study_id)
                self.on_change(study_id)
                return study_id
        return None

    def run_next(self) -> str | None:
        """Claim one calibration or study and run it to its end; return its id, or None when there was nothing
        to do."""
        calibration_id = self.claim_next_calibration()
        if calibration_id is not None:
            try:
                self._run_calibration(calibration_id)
            finally:
                with self._lock:
                    self._held_calibrations.discard(calibration_id)
            return calibration_id
        validation_id = self.claim_next_validation()
        if validation_id is not None:
            try:
                self._run_validation(validation_id)
            finally:
                with self._lock:
                    self._held_validations.discard(validation_id)
            return validation_id
        study_id = self.claim_next()
        if study_id is None:
            return None
        try:
            self._run(study_id)
        finally:
            with self._lock:
                self._held.discard(study_id)
        return study_id

    def _run(self, study_id: str) -> None:
        url = self.settings.resolved_database_url
        with transaction(self.sessions) as s:
            study = crud.get_study(s, study_id=study_id)
            assert study is not None
            spec_data, total = study.spec, study.trials_total
        log.info("running study %s", study_id)
        try:
            spec = StudySpec.from_dict(spec_data)
            # The stored spec names its corpus; only the run sees the path (service/corpora.py).
            runnable = replace(spec, corpus=Corpora.from_settings(self.settings).path_of(spec.corpus))
            watch = _StudyWatch(self, study_id, total)
            cache = ResultCache(self.settings.resolved_data_dir / "cache")
            with self.executor_factory(self.settings.executor) as executor:
                runner = StudyRunner(runnable, study_id, url, executor, cache=cache, on_progress=watch.on_progress,
                                     should_cancel=watch.should_cancel)  # fmt: skip
                outcome = runner.run()
        except SchedulerStopping:
            log.info("scheduler stopping: study %s left running; it resumes on the next start", study_id)
            with transaction(self.sessions) as s:
                crud.release_lease(s, study_id=study_id, owner=self.owner)
            self.on_change(study_id)
            return
        except Exception as exc:
            log.exception("study %s failed", study_id)
            self._finish(study_id, "failed", _short_error(exc))
            return
        if outcome == "cancelled":
            self._finish(study_id, "cancelled")
            return
        try:
            result = analyse(spec, study_id, url)
        except Exception as exc:
            log.exception("analysis of study %s failed", study_id)
            self._finish(study_id, "failed", f"all trials ran, but the analysis failed: {_short_error(exc)}")
            return
        with transaction(self.sessions) as s:
            crud.store_result(s, study_id=study_id, **result)
            study = crud.get_study(s, study_id=study_id)
            if study is not None:
                study.trials_done = study.trials_total
        self.on_change(study_id)
        self._finish(study_id, "completed")

    # -- one calibration --------------------------------------------------------------------------------
    def claim_next_calibration(self) -> str | None:
        now = utcnow()
        with transaction(self.sessions) as s:
            candidates = crud.claimable_calibrations(s, now=now)
        for calibration_id in candidates:
            with transaction(self.sessions) as s:
                claimed = crud.claim_calibration(s, calibration_id=calibration_id, owner=self.owner, now=now,
                                                 lease_s=self.settings.scheduler_lease_s)  # fmt: skip
            if claimed:
                with self._lock:
                    self._held_calibrations.add(calibration_id)
                return calibration_id
        return None

    def _run_calibration(self, calibration_id: str) -> None:
        from alphasearch.calibrate import (
            CalibrationInterrupted,
            CalibrationProgress,
            CalibrationSettings,
            calibrate,
        )

        with transaction(self.sessions) as s:
            row = crud.get_calibration(s, calibration_id=calibration_id)
            assert row is not None
            settings_data, width = row.settings, row.width
        log.info("calibrating width %d (%s)", width, calibration_id)
        last_write = 0.0

        def on_progress(event: CalibrationProgress) -> None:
            nonlocal last_write
            now = time.monotonic()
            if event.phase != "done" and event.done and now - last_write < PROGRESS_WRITE_S / 2:
                return
            last_write = now
            with transaction(self.sessions) as s:
                crud.record_calibration_progress(
                    s, calibration_id=calibration_id, owner=self.owner,
                    progress={"phase": event.phase, "done": event.done, "total": event.total, "message": event.message},
                )  # fmt: skip

        try:
            named = CalibrationSettings.from_dict(settings_data)
            settings = replace(named, corpus=Corpora.from_settings(self.settings).path_of(named.corpus))
            cache = ResultCache(self.settings.resolved_data_dir / "cache")
            with self.executor_factory(self.settings.executor) as executor:
                [result] = calibrate([width], settings, executor=executor, cache=cache, on_progress=on_progress,
                                     should_stop=self.stopping.is_set)  # fmt: skip
        except CalibrationInterrupted:
            log.info("scheduler stopping: calibration %s left running; it runs again on the next start", calibration_id)
            with transaction(self.sessions) as s:
                crud.release_calibration_lease(s, calibration_id=calibration_id, owner=self.owner)
            return
        except Exception as exc:
            log.exception("calibration %s failed", calibration_id)
            with transaction(self.sessions) as s:
                crud.finish_calibration(s, calibration_id=calibration_id, owner=self.owner, result=None,
                                        error=_short_error(exc))  # fmt: skip
            return
        result.settings = {**result.settings, "corpus": named.corpus}  # the name, never the server's path
        with transaction(self.sessions) as s:
            crud.finish_calibration(s, calibration_id=calibration_id, owner=self.owner, result=result.to_dict(),
                                    error=result.error)  # fmt: skip
        log.info("calibration %s %s", calibration_id, "failed" if result.error else "completed")

    # -- one validation ----------------------------------------------------------------------------------
    def claim_next_validation(self) -> str | None:
        now = utcnow()
        with transaction(self.sessions) as s:
            candidates = crud.claimable_validations(s, now=now)
        for validation_id in candidates:
            with transaction(self.sessions) as s:
                claimed = crud.claim_validation(s, validation_id=validation_id, owner=self.owner, now=now,
                                                lease_s=self.settings.scheduler_lease_s)  # fmt: skip
            if claimed:
                with self._lock:
                    self._held_validations.add(validation_id)
                return validation_id
        return None

    def _run_validation(self, validation_id: str) -> None:
        from alphasearch.validation import ValidationInterrupted
        from service.validations import execute

        log.info("running validation %s", validation_id)
        try:
            cache = ResultCache(self.settings.resolved_data_dir / "cache")
            with self.executor_factory(self.settings.executor) as executor:
                execute(validation_id, self.sessions, self.settings.resolved_database_url, owner=self.owner,
                        executor=executor, cache=cache, should_stop=self.stopping.is_set,
                        corpus_path=Corpora.from_settings(self.settings).path_of)  # fmt: skip
        except ValidationInterrupted:
            log.info("scheduler stopping: validation %s left running; it resumes on the next start", validation_id)
            with transaction(self.sessions) as s:
                crud.release_validation_lease(s, validation_id=validation_id, owner=self.owner)
            return
        except Exception as exc:
            log.exception("validation %s failed", validation_id)
            with transaction(self.sessions) as s:
                crud.finish_validation(s, validation_id=validation_id, owner=self.owner, runs=None, result=None,
                                       error=_short_error(exc))  # fmt: skip
            return
        log.info("validation %s completed", validation_id)

    def _finish(self, study_id: str, status: str, error: str | None = None) -> None:
        with transaction(self.sessions) as s:
            crud.finish(s, study_id=study_id, owner=self.owner, status=status, error=error)
        self.on_change(study_id)
        log.info("study %s %s", study_id, status)
        if self.on_finished is not None:
            self.on_finished(study_id, status)


def _lower_priority(nice: int) -> None:
    """Lower this thread's CPU priority (Linux: per thread, inherited by the threads and processes it
    starts, so an embedded Ray instance and its training workers run niced too). Best effort elsewhere."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
    except OSError:
        log.debug("could not lower the scheduler's priority")


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:2000] + " ..."
