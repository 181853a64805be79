"""Hot reads of GET /studies/{id}: each study's public JSON, serialized once and served from memory.

Dashboards and scripts poll studies; on a 2-core box shared with training, building the answer from the
database on every poll (about 1 ms of CPU) is what limits latency under load (docs/benchmarks.md). Here a
snapshot lives at most `study_cache_ttl_s` (default 1 s) and is dropped at once when this process changes
the study (a cancel, its own scheduler's progress and status writes). Changes made by another process
(`alphasearch scheduler` deployed apart) show up within the TTL. A generation counter per study keeps a
read that raced with a write from caching the older state, and loads are single-flight: when a snapshot
expires or is dropped while 50 clients poll it, one of them reads the database and the rest wait for it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from service import crud
from service.models import Study

MAX_SNAPSHOTS = 4096


class StudySnapshots:
    def __init__(self, sessions: sessionmaker[Session], ttl_s: float, render: Callable[[Study], bytes]) -> None:
        self.sessions, self.ttl_s, self.render = sessions, ttl_s, render
        self._snapshots: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._generation: dict[str, int] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def cached(self, study_id: str) -> bytes | None:
        """A fresh snapshot, or None (safe to call on the event loop: no I/O)."""
        with self._lock:
            hit = self._snapshots.get(study_id)
            if hit is None or time.monotonic() - hit[0] >= self.ttl_s:
                return None
            return hit[1]

    def load(self, study_id: str) -> bytes | None:
        """Read the study from the database and remember its snapshot; None when there is no such study."""
        with self._lock:
            loading = self._loading.setdefault(study_id, threading.Lock())
        with loading:  # single flight: whoever waited here finds the snapshot the first one stored
            body = self.cached(study_id)
            return body if body is not None else self._load(study_id)

    def _load(self, study_id: str) -> bytes | None:
        with self._lock:
            generation = self._generation.get(study_id, 0)
        with self.sessions() as session:
            study = crud.get_study(session, study_id=study_id)
            if study is None:
                return None
            body = self.render(study)
        if self.ttl_s > 0:
            with self._lock:
                if self._generation.get(study_id, 0) == generation:  # no write since our read began
                    self._snapshots[study_id] = (time.monotonic(), body)
                    self._snapshots.move_to_end(study_id)
                    while len(self._snapshots) > MAX_SNAPSHOTS:
                        self._snapshots.popitem(last=False)
        return body

    def invalidate(self, study_id: str, *_: object) -> None:
        with self._lock:
            self._snapshots.pop(study_id, None)
            self._generation[study_id] = self._generation.get(study_id, 0) + 1
            if len(self._generation) > 4 * MAX_SNAPSHOTS:
                self._generation.clear()  # only in-flight loads could misjudge, and they re-read next time
                self._loading.clear()
