"""The service's own tables: studies, batches and their stored results (SQLAlchemy 2.0, typed).

Optuna keeps its trials in the SAME database under its own names (`studies`, `trials`, ... and its own
`alembic_version`), hence the `app_` prefix on every table here and a separate Alembic version table
(`app_alembic_version`, see service/migrations/env.py): the two schemas never collide or migrate each other.

A study's life: queued -> running -> completed | failed | cancelled. A running study is held by one
scheduler through a lease (`lease_owner`, `lease_expires_at`); a lease that lapses means that scheduler
died, and another one (or the same service restarted) resumes the study.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so Alembic diffs are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Batch(Base):
    """Many studies submitted together; validated all-or-nothing."""

    __tablename__ = "app_batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="batch", order_by="Study.batch_index")


class Study(Base):
    """One submitted StudySpec and where it stands."""

    __tablename__ = "app_studies"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="status"),
        Index("ix_app_studies_status_created_at", "status", "created_at"),
        Index("ix_app_studies_norm_attention", "norm", "attention"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]  # StudySpec.to_dict(): every field, presets resolved
    fingerprint: Mapped[str] = mapped_column(String(32))  # StudySpec.fingerprint(): what it computes
    # Copied out of the spec for filtering (GET /recommendations pools studies of one family).
    norm: Mapped[str] = mapped_column(String(32))
    attention: Mapped[str] = mapped_column(String(32))
    embed_scale: Mapped[str] = mapped_column(String(32))
    target_width: Mapped[int]
    target_depth: Mapped[int]

    status: Mapped[str] = mapped_column(String(16), default="queued")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    # Progress, written by the scheduler while it runs the study.
    trials_done: Mapped[int] = mapped_column(Integer, default=0)
    trials_total: Mapped[int] = mapped_column(Integer, default=0)
    lanes: Mapped[list[Any] | None]  # per (width, depth[, rmsnorm]): label, done, total, best
    eta_s: Mapped[float | None] = mapped_column(Float)

    batch_id: Mapped[str | None] = mapped_column(ForeignKey("app_batches.id", ondelete="SET NULL"), index=True)
    batch_index: Mapped[int | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))

    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    batch: Mapped[Batch | None] = relationship(back_populates="studies")
    result: Mapped[StudyResult | None] = relationship(back_populates="study", cascade="all, delete-orphan")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class StudyResult(Base):
    """What the scheduler computed when the study finished, so requests never run the analysis."""

    __tablename__ = "app_results"

    study_id: Mapped[str] = mapped_column(ForeignKey("app_studies.id", ondelete="CASCADE"), primary_key=True)
    recommendation: Mapped[dict[str, Any]]  # Recommendation.to_dict(): the DESIGN §7 JSON
    report: Mapped[dict[str, Any]]  # StudyReport.to_dict(): result.json, heatmap grids included
    optima: Mapped[list[Any]]  # WidthOptimum.to_dict() per proxy (width, depth): pooled across studies
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    study: Mapped[Study] = relationship(back_populates="result")


class Figure(Base):
    """A rendered PNG of a finished study: `w64-d4`, `extrapolated` (heatmaps) or `width-fit`."""

    __tablename__ = "app_figures"

    study_id: Mapped[str] = mapped_column(ForeignKey("app_studies.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    png: Mapped[bytes] = mapped_column(LargeBinary)


CALIBRATION_STATUSES = ("queued", "running", "completed", "failed")


class Calibration(Base):
    """One proxy width's calibration (alphasearch/calibrate.py): its training regime, seed noise, alpha effect.

    The key a study's `use_calibration` looks up is (width, depth, norm, attention, embed_scale,
    corpus_fingerprint, code_version) plus the run length it was measured at (steps, batch_size, seq_len);
    the newest completed row wins. `result` is `WidthCalibration.to_dict()`. Queued rows are run by the
    scheduler (same claim + lease protocol as studies); `alphasearch calibrate` stores finished rows directly.
    """

    __tablename__ = "app_calibrations"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s) for s in CALIBRATION_STATUSES)})", name="status"),
        Index("ix_app_calibrations_key", "width", "depth", "norm", "attention", "embed_scale", "corpus_fingerprint",
              "code_version"),  # fmt: skip
        Index("ix_app_calibrations_status_created_at", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    width: Mapped[int]
    depth: Mapped[int]
    norm: Mapped[str] = mapped_column(String(32))
    attention: Mapped[str] = mapped_column(String(32))
    embed_scale: Mapped[str] = mapped_column(String(32))
    corpus: Mapped[str | None] = mapped_column(Text)  # the path as given; None = the default corpus
    corpus_fingerprint: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(32))
    steps: Mapped[int]
    batch_size: Mapped[int]
    seq_len: Mapped[int]
    settings: Mapped[dict[str, Any]]  # CalibrationSettings.to_dict(): every field, preset resolved
    result: Mapped[dict[str, Any] | None]  # WidthCalibration.to_dict() once it ran
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[dict[str, Any] | None]  # phase, done, total (runs), message

    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


VALIDATION_STATUSES = ("queued", "running", "completed", "failed")


class Validation(Base):
    """A finished study's recommendation trained at a width wider than its proxies (alphasearch/validation.py).

    One row per (study, width, seeds): asking again with the same body returns the same row (a failed one is
    queued again). `study_id` has no foreign key on purpose: a study run by `alphasearch study run` lives only
    in Optuna's tables (id `cli-<fingerprint>`), and it can be validated too. `plan` is
    ValidationPlan.to_dict() once the scheduler (or the CLI) resolved the recommended pair at `width`; `runs`
    holds every finished run (validation.Run.to_dict()), `result` the regret summary (validation.summarise).
    Queued rows are run by the scheduler, with the same claim + lease protocol as studies and calibrations.
    """

    __tablename__ = "app_validations"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s) for s in VALIDATION_STATUSES)})", name="status"),
        UniqueConstraint("study_id", "width", "seeds"),
        Index("ix_app_validations_status_created_at", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    width: Mapped[int]
    seeds: Mapped[int]
    plan: Mapped[dict[str, Any] | None]
    runs: Mapped[list[Any] | None]
    result: Mapped[dict[str, Any] | None]
    progress: Mapped[dict[str, Any] | None]  # done, total (runs), message
    error: Mapped[str | None] = mapped_column(Text)

    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
