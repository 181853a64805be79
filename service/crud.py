"""Data functions over the service's tables. Keyword-only; they return None when nothing is found and
raise the library's errors (StateError) for state conflicts; only the routes turn those into HTTP errors.
Sessions and transactions belong to the caller.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from alphasearch.calibrate import SETTINGS_KEYS, settings_match
from alphasearch.errors import StateError
from alphasearch.spec import StudySpec
from service.models import Batch, Calibration, Figure, Study, StudyResult, Validation, utcnow


def new_id() -> str:
    return secrets.token_hex(8)


def trials_planned(spec: StudySpec) -> int:
    """Trials the study will run, RMSNorm baselines (one trial per (width, depth)) included."""
    lanes = len(spec.proxy_widths) * len(spec.proxy_depths)
    return spec.total_trials + (lanes if spec.rmsnorm_baseline else 0)


def new_study(
    *,
    spec: StudySpec,
    batch_id: str | None = None,
    batch_index: int | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> Study:
    return Study(
        id=new_id(),
        name=spec.name,
        spec=spec.to_dict(),
        fingerprint=spec.fingerprint(),
        norm=spec.norm,
        attention=spec.attention,
        embed_scale=spec.embed_scale,
        target_width=spec.target_width,
        target_depth=spec.target_depth,
        status="queued",
        cancel_requested=False,
        trials_done=0,
        trials_total=trials_planned(spec),
        batch_id=batch_id,
        batch_index=batch_index,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )


def create_study(session: Session, *, spec: StudySpec, idempotency_key: str | None = None,
                 request_hash: str | None = None) -> Study:  # fmt: skip
    study = new_study(spec=spec, idempotency_key=idempotency_key, request_hash=request_hash)
    session.add(study)
    session.flush()
    return study


def get_study(session: Session, *, study_id: str) -> Study | None:
    return session.get(Study, study_id)


def get_study_by_idempotency_key(session: Session, *, key: str) -> Study | None:
    return session.scalars(select(Study).where(Study.idempotency_key == key)).one_or_none()


def list_studies(
    session: Session, *, status: str | None = None, batch_id: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[Study], int]:
    query = select(Study)
    if status is not None:
        query = query.where(Study.status == status)
    if batch_id is not None:
        query = query.where(Study.batch_id == batch_id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Study.created_at.desc(), Study.id).limit(limit).offset(offset)).all()
    return list(rows), count


def active_users_of_corpus(session: Session, *, corpus: str) -> list[str]:
    """Ids of the queued or running studies and calibrations whose `corpus` is this name."""
    studies = session.execute(select(Study.id, Study.spec).where(Study.status.in_(("queued", "running")))).all()
    users = [f"study {sid}" for sid, spec in studies if (spec or {}).get("corpus") == corpus]
    calibrations = session.scalars(
        select(Calibration.id).where(Calibration.status.in_(("queued", "running")), Calibration.corpus == corpus)
    ).all()
    return users + [f"calibration {cid}" for cid in calibrations]


def count_by_status(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Study.status, func.count()).group_by(Study.status)).all())


def request_cancel(session: Session, *, study_id: str) -> Study | None:
    """Queued: cancelled at once. Running: flagged; its scheduler stops it within seconds.

    Raises StateError for a study that already finished.
    """
    for _ in range(3):  # the scheduler may move the study between our read and our write
        study = session.get(Study, study_id)
        if study is None:
            return None
        if study.finished:
            raise StateError(f"study {study_id} already {study.status}; only queued or running studies can be cancelled")
        if study.status == "queued":
            done = session.execute(
                update(Study)
                .where(Study.id == study_id, Study.status == "queued")
                .values(status="cancelled", cancel_requested=True, finished_at=utcnow(), eta_s=None)
            )
        else:
            done = session.execute(
                update(Study).where(Study.id == study_id, Study.status == "running").values(cancel_requested=True)
            )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            session.expire(study)
            return session.get(Study, study_id)
        session.expire(study)
    raise StateError(f"study {study_id} changed state while cancelling; try again")


def create_batch(
    session: Session,
    *,
    specs: list[StudySpec],
    name: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> Batch:
    batch = Batch(id=new_id(), name=name, idempotency_key=idempotency_key, request_hash=request_hash)
    session.add(batch)
    session.flush()
    for index, spec in enumerate(specs):
        session.add(new_study(spec=spec, batch_id=batch.id, batch_index=index))
    session.flush()
    session.refresh(batch)
    return batch


def get_batch(session: Session, *, batch_id: str) -> Batch | None:
    return session.get(Batch, batch_id)


def get_batch_by_idempotency_key(session: Session, *, key: str) -> Batch | None:
    return session.scalars(select(Batch).where(Batch.idempotency_key == key)).one_or_none()


def get_result(session: Session, *, study_id: str) -> StudyResult | None:
    return session.get(StudyResult, study_id)


def get_figure(session: Session, *, study_id: str, key: str) -> bytes | None:
    return session.scalar(select(Figure.png).where(Figure.study_id == study_id, Figure.key == key))


def figure_keys(session: Session, *, study_id: str) -> list[str]:
    return list(session.scalars(select(Figure.key).where(Figure.study_id == study_id).order_by(Figure.key)))


def completed_family(session: Session, *, norm: str, attention: str, embed_scale: str | None) -> list[str]:
    """Ids of completed studies of one model family, in a stable order (the pooled-recommendation key)."""
    query = select(Study.id).where(Study.status == "completed", Study.norm == norm, Study.attention == attention)
    if embed_scale is not None:
        query = query.where(Study.embed_scale == embed_scale)
    return list(session.scalars(query.order_by(Study.id)))


def results_of(session: Session, *, study_ids: list[str]) -> list[tuple[Study, StudyResult]]:
    rows = session.execute(
        select(Study, StudyResult).join(StudyResult, StudyResult.study_id == Study.id).where(Study.id.in_(study_ids))
    )
    return [(study, result) for study, result in rows]


# -- scheduler side ----------------------------------------------------------------------------------


def claimable(session: Session, *, now: datetime, limit: int = 10) -> list[str]:
    """Studies a scheduler may take: running ones whose lease lapsed (resume them first), then queued."""
    lapsed = session.scalars(
        select(Study.id)
        .where(Study.status == "running", (Study.lease_expires_at.is_(None)) | (Study.lease_expires_at < now))
        .order_by(Study.started_at)
        .limit(limit)
    ).all()
    queued = session.scalars(
        select(Study.id).where(Study.status == "queued").order_by(Study.created_at, Study.id).limit(limit)
    ).all()
    return [*lapsed, *queued]


def _claim(session: Session, table: type[Study] | type[Calibration], row_id: str, *, owner: str, now: datetime,
           lease_s: float) -> bool:  # fmt: skip
    """Take a queued row, or a running one whose lease lapsed, in one UPDATE guarded by its state: of two
    schedulers racing for it, exactly one sees rowcount 1."""
    lease = now + timedelta(seconds=lease_s)
    took_queued = session.execute(
        update(table)
        .where(table.id == row_id, table.status == "queued")
        .values(status="running", lease_owner=owner, lease_expires_at=lease, started_at=now)
    )
    if took_queued.rowcount == 1:  # type: ignore[attr-defined]
        return True
    took_lapsed = session.execute(
        update(table)
        .where(
            table.id == row_id,
            table.status == "running",
            (table.lease_expires_at.is_(None)) | (table.lease_expires_at < now),
        )
        .values(lease_owner=owner, lease_expires_at=lease)
    )
    return took_lapsed.rowcount == 1  # type: ignore[attr-defined]


def _renew(session: Session, table: type[Study] | type[Calibration], row_id: str, *, owner: str, now: datetime,
           lease_s: float) -> bool:  # fmt: skip
    result = session.execute(
        update(table)
        .where(table.id == row_id, table.lease_owner == owner, table.status == "running")
        .values(lease_expires_at=now + timedelta(seconds=lease_s))
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def _release(session: Session, table: type[Study] | type[Calibration], row_id: str, *, owner: str) -> None:
    session.execute(update(table).where(table.id == row_id, table.lease_owner == owner).values(lease_expires_at=None))


def claim(session: Session, *, study_id: str, owner: str, now: datetime, lease_s: float) -> bool:
    """Atomically take a study (one UPDATE guarded by its state): two schedulers never both win."""
    return _claim(session, Study, study_id, owner=owner, now=now, lease_s=lease_s)


def renew_lease(session: Session, *, study_id: str, owner: str, now: datetime, lease_s: float) -> bool:
    return _renew(session, Study, study_id, owner=owner, now=now, lease_s=lease_s)


def release_lease(session: Session, *, study_id: str, owner: str) -> None:
    """Let another scheduler (or this service after a restart) resume the study at once."""
    _release(session, Study, study_id, owner=owner)


def record_progress(
    session: Session, *, study_id: str, owner: str, done: int, total: int, lanes: list[dict[str, Any]],
    eta_s: float | None,
) -> None:  # fmt: skip
    session.execute(
        update(Study)
        .where(Study.id == study_id, Study.lease_owner == owner)
        .values(trials_done=done, trials_total=total, lanes=lanes, eta_s=eta_s)
    )


def is_cancel_requested(session: Session, *, study_id: str) -> bool:
    return bool(session.scalar(select(Study.cancel_requested).where(Study.id == study_id)))


def finish(session: Session, *, study_id: str, owner: str, status: str, error: str | None = None) -> None:
    session.execute(
        update(Study)
        .where(Study.id == study_id, Study.lease_owner == owner)
        .values(status=status, error=error, finished_at=utcnow(), eta_s=None, lease_expires_at=None)
    )


def store_result(
    session: Session, *, study_id: str, recommendation: dict[str, Any], report: dict[str, Any],
    optima: list[dict[str, Any]], figures: dict[str, bytes],
) -> None:  # fmt: skip
    old = session.get(StudyResult, study_id)
    if old is not None:  # a study re-analysed after a resume: the newest analysis wins
        session.delete(old)
    session.execute(Figure.__table__.delete().where(Figure.study_id == study_id))
    session.flush()
    session.add(StudyResult(study_id=study_id, recommendation=recommendation, report=report, optima=optima))
    session.add_all(Figure(study_id=study_id, key=key, png=png) for key, png in figures.items())


# -- calibrations ------------------------------------------------------------------------------------


def new_calibration(
    *, width: int, settings: dict[str, Any], corpus_fingerprint: str, code_version: str, status: str = "queued"
) -> Calibration:
    """A calibration row for one width; `settings` is CalibrationSettings.to_dict() (preset resolved)."""
    return Calibration(
        id=new_id(), status=status, width=width, depth=settings["depth"], norm=settings["norm"],
        attention=settings["attention"], embed_scale=settings["embed_scale"], corpus=settings.get("corpus"),
        corpus_fingerprint=corpus_fingerprint, code_version=code_version, steps=settings["steps"],
        batch_size=settings["batch_size"], seq_len=settings["seq_len"], settings=settings,
    )  # fmt: skip


def create_calibrations(
    session: Session, *, widths: list[int], settings: dict[str, Any], corpus_fingerprint: str, code_version: str
) -> list[Calibration]:
    """Queue one calibration per width (the scheduler runs them)."""
    rows = [new_calibration(width=w, settings=settings, corpus_fingerprint=corpus_fingerprint,
                            code_version=code_version) for w in widths]  # fmt: skip
    session.add_all(rows)
    session.flush()
    return rows


def store_calibration(session: Session, *, result: dict[str, Any], error: str | None = None) -> Calibration:
    """A calibration that already ran (`alphasearch calibrate`): stored finished, completed or failed."""
    now = utcnow()
    row = new_calibration(width=result["width"], settings=result["settings"],
                          corpus_fingerprint=result["corpus_fingerprint"], code_version=result["code_version"],
                          status="failed" if error else "completed")  # fmt: skip
    row.result, row.error, row.started_at, row.finished_at = result, error, now, now
    runs = sum(len(result.get(key) or []) for key in ("ladder", "seed_runs", "grid_runs"))
    row.progress = {"phase": "done", "done": runs, "total": runs, "message": error or "calibrated"}
    session.add(row)
    session.flush()
    return row


def get_calibration(session: Session, *, calibration_id: str) -> Calibration | None:
    return session.get(Calibration, calibration_id)


def list_calibrations(
    session: Session, *, width: int | None = None, depth: int | None = None, norm: str | None = None,
    status: str | None = None, limit: int = 100, offset: int = 0,
) -> tuple[list[Calibration], int]:  # fmt: skip
    query = select(Calibration)
    for column, value in ((Calibration.width, width), (Calibration.depth, depth), (Calibration.norm, norm),
                          (Calibration.status, status)):  # fmt: skip
        if value is not None:
            query = query.where(column == value)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Calibration.created_at.desc(), Calibration.id).limit(limit).offset(offset))
    return list(rows.all()), count


def find_calibration(session: Session, *, key: dict[str, Any]) -> Calibration | None:
    """The newest completed calibration matching `key` (alphasearch.calibrate.calibration_key): its columns in
    SQL, its settings part (target width, init scaling: calibrate.SETTINGS_KEYS) on the few rows that match."""
    query = select(Calibration).where(Calibration.status == "completed")
    for name, value in key.items():
        if name not in SETTINGS_KEYS:
            query = query.where(getattr(Calibration, name) == value)
    rows = session.scalars(query.order_by(Calibration.finished_at.desc(), Calibration.id))
    return next((row for row in rows if settings_match(row.settings or {}, key)), None)


def claimable_calibrations(session: Session, *, now: datetime, limit: int = 10) -> list[str]:
    """Calibrations a scheduler may take: running ones whose lease lapsed (their runs are cached), then queued."""
    lapsed = session.scalars(
        select(Calibration.id)
        .where(Calibration.status == "running",
               (Calibration.lease_expires_at.is_(None)) | (Calibration.lease_expires_at < now))  # fmt: skip
        .order_by(Calibration.started_at)
        .limit(limit)
    ).all()
    queued = session.scalars(
        select(Calibration.id).where(Calibration.status == "queued").order_by(Calibration.created_at, Calibration.id)
        .limit(limit)
    ).all()  # fmt: skip
    return [*lapsed, *queued]


def claim_calibration(session: Session, *, calibration_id: str, owner: str, now: datetime, lease_s: float) -> bool:
    """One guarded UPDATE, as `claim` for studies: two schedulers never both win."""
    return _claim(session, Calibration, calibration_id, owner=owner, now=now, lease_s=lease_s)


def renew_calibration_lease(session: Session, *, calibration_id: str, owner: str, now: datetime, lease_s: float) -> bool:
    return _renew(session, Calibration, calibration_id, owner=owner, now=now, lease_s=lease_s)


def release_calibration_lease(session: Session, *, calibration_id: str, owner: str) -> None:
    _release(session, Calibration, calibration_id, owner=owner)


def record_calibration_progress(session: Session, *, calibration_id: str, owner: str, progress: dict[str, Any]) -> None:
    session.execute(
        update(Calibration)
        .where(Calibration.id == calibration_id, Calibration.lease_owner == owner)
        .values(progress=progress)
    )


def finish_calibration(
    session: Session, *, calibration_id: str, owner: str, result: dict[str, Any] | None, error: str | None
) -> None:
    """completed with its result, or failed with the error (and whatever it measured)."""
    values: dict[str, Any] = {"status": "failed" if error else "completed", "result": result, "error": error,
                              "finished_at": utcnow(), "lease_expires_at": None}  # fmt: skip
    if result is not None:  # what the run actually used (the code may have changed since it was queued)
        values.update(corpus_fingerprint=result["corpus_fingerprint"], code_version=result["code_version"])
    session.execute(
        update(Calibration).where(Calibration.id == calibration_id, Calibration.lease_owner == owner).values(**values)
    )


# -- validations -------------------------------------------------------------------------------------


def find_validation(session: Session, *, study_id: str, width: int, seeds: int) -> Validation | None:
    return session.scalars(
        select(Validation).where(Validation.study_id == study_id, Validation.width == width, Validation.seeds == seeds)
    ).one_or_none()


def request_validation(session: Session, *, study_id: str, width: int, seeds: int) -> tuple[Validation, bool]:
    """(row, created): the validation of (study, width, seeds), queued unless it exists. Asking again returns
    the same row; a failed one is queued again (its finished runs come from the run cache)."""
    row = find_validation(session, study_id=study_id, width=width, seeds=seeds)
    if row is None:
        row = Validation(id=new_id(), study_id=study_id, width=width, seeds=seeds, status="queued")
        session.add(row)
        session.flush()
        return row, True
    if row.status == "failed":
        session.execute(
            update(Validation).where(Validation.id == row.id, Validation.status == "failed")
            .values(status="queued", error=None, lease_owner=None, lease_expires_at=None, finished_at=None)
        )  # fmt: skip
        session.expire(row)
    return row, False


def start_validation(session: Session, *, study_id: str, width: int, seeds: int, owner: str, lease_s: float) -> Validation:
    """The CLI's side: the row for (study, width, seeds) taken by `owner`, whatever its state (a completed one
    is run again: its runs come from the cache)."""
    row, _ = request_validation(session, study_id=study_id, width=width, seeds=seeds)
    session.execute(
        update(Validation).where(Validation.id == row.id)
        .values(status="running", lease_owner=owner, lease_expires_at=utcnow() + timedelta(seconds=lease_s),
                started_at=utcnow(), finished_at=None, error=None)
    )  # fmt: skip
    session.expire(row)
    return row


def get_validation(session: Session, *, validation_id: str) -> Validation | None:
    return session.get(Validation, validation_id)


def list_validations(session: Session, *, study_id: str) -> list[Validation]:
    query = select(Validation).where(Validation.study_id == study_id)
    return list(session.scalars(query.order_by(Validation.created_at.desc(), Validation.id)))


def claimable_validations(session: Session, *, now: datetime, limit: int = 10) -> list[str]:
    """Validations a scheduler may take: running ones whose lease lapsed (their runs are cached), then queued."""
    lapsed = session.scalars(
        select(Validation.id)
        .where(Validation.status == "running",
               (Validation.lease_expires_at.is_(None)) | (Validation.lease_expires_at < now))  # fmt: skip
        .order_by(Validation.started_at)
        .limit(limit)
    ).all()
    queued = session.scalars(
        select(Validation.id).where(Validation.status == "queued").order_by(Validation.created_at, Validation.id)
        .limit(limit)
    ).all()  # fmt: skip
    return [*lapsed, *queued]


def claim_validation(session: Session, *, validation_id: str, owner: str, now: datetime, lease_s: float) -> bool:
    return _claim(session, Validation, validation_id, owner=owner, now=now, lease_s=lease_s)  # type: ignore[arg-type]


def renew_validation_lease(session: Session, *, validation_id: str, owner: str, now: datetime, lease_s: float) -> bool:
    return _renew(session, Validation, validation_id, owner=owner, now=now, lease_s=lease_s)  # type: ignore[arg-type]


def release_validation_lease(session: Session, *, validation_id: str, owner: str) -> None:
    _release(session, Validation, validation_id, owner=owner)  # type: ignore[arg-type]


def record_validation(session: Session, *, validation_id: str, owner: str, **values: Any) -> None:
    """Write plan / runs / result / progress of a running validation (only its lease holder may)."""
    session.execute(
        update(Validation).where(Validation.id == validation_id, Validation.lease_owner == owner).values(**values)
    )


def finish_validation(session: Session, *, validation_id: str, owner: str, runs: list[Any] | None,
                      result: dict[str, Any] | None, error: str | None) -> None:  # fmt: skip
    values: dict[str, Any] = {"status": "failed" if error else "completed", "error": error, "finished_at": utcnow(),
                              "lease_expires_at": None}  # fmt: skip
    if runs is not None:
        values["runs"] = runs
    if result is not None:
        values["result"] = result
        values["progress"] = {"done": result["runs_done"], "total": result["runs_total"], "message": "done"}
    session.execute(
        update(Validation).where(Validation.id == validation_id, Validation.lease_owner == owner).values(**values)
    )
