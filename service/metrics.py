"""Prometheus metrics, read from the database at scrape time (the scheduler may run in another process).

alphasearch_studies{status}            studies per status
alphasearch_queue_depth                queued studies
alphasearch_trials{state}              Optuna trials of alphasearch studies per state
alphasearch_trial_duration_seconds     histogram of finished trials' wall time
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service import crud
from service.models import STATUSES

log = logging.getLogger(__name__)
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0)

# Optuna's own tables (`studies`, `trials`): read-only, only rows of studies that alphasearch created.
_TRIAL_STATES = text(
    "SELECT t.state, COUNT(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
    "WHERE s.study_name LIKE 'alphasearch/%' GROUP BY t.state"
)
_TRIAL_TIMES = text(
    "SELECT t.datetime_start, t.datetime_complete FROM trials t JOIN studies s ON s.study_id = t.study_id "
    "WHERE s.study_name LIKE 'alphasearch/%' AND t.datetime_start IS NOT NULL AND t.datetime_complete IS NOT NULL"
)


class ServiceCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        with self.sessions() as s:
            by_status = crud.count_by_status(s)
            studies = GaugeMetricFamily("alphasearch_studies", "Studies per status", labels=["status"])
            for status in STATUSES:
                studies.add_metric([status], by_status.get(status, 0))
            yield studies
            yield GaugeMetricFamily("alphasearch_queue_depth", "Queued studies", value=by_status.get("queued", 0))
            try:
                states = s.execute(_TRIAL_STATES).all()
                times = s.execute(_TRIAL_TIMES).all()
            except SQLAlchemyError:  # Optuna has not created its tables yet
                s.rollback()
                states, times = [], []
        trials = GaugeMetricFamily("alphasearch_trials", "Optuna trials per state", labels=["state"])
        for state, count in states:
            trials.add_metric([str(getattr(state, "name", state))], count)
        yield trials
        durations = [(_when(end) - _when(start)).total_seconds() for start, end in times]
        counts = Counter(next((b for b in DURATION_BUCKETS if d <= b), float("inf")) for d in durations)
        cumulative, buckets = 0, []
        for bound in (*DURATION_BUCKETS, float("inf")):
            cumulative += counts.get(bound, 0)
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "alphasearch_trial_duration_seconds", "Wall time of finished trials", buckets=buckets,
            sum_value=sum(durations),
        )  # fmt: skip


def _when(value: datetime | str) -> datetime:
    """SQLite hands raw-SQL timestamps back as text."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def make_registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(sessions))
    return registry
