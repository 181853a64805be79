"""The in-memory study snapshots behind GET /studies/{id}: fresh after this process's writes, bounded
staleness for writes made elsewhere, and no caching of a read that raced with a write."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import update

from alphasearch.spec import StudySpec
from service import crud
from service.db import make_engine, make_sessionmaker, migrate
from service.models import Study
from service.snapshots import StudySnapshots


def setup(tmp_path: Path, ttl: float) -> tuple[StudySnapshots, object, str]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        study = crud.create_study(s, spec=StudySpec.from_dict({"preset": "smoke", "target_width": 1024, "target_depth": 8}))
        s.commit()
    return StudySnapshots(sessions, ttl, lambda st: st.status.encode()), sessions, study.id


def set_status(sessions: object, study_id: str, status: str) -> None:
    with sessions() as s:  # type: ignore[operator]
        s.execute(update(Study).where(Study.id == study_id).values(status=status))
        s.commit()


def test_invalidate_makes_the_next_read_fresh(tmp_path: Path) -> None:
    snaps, sessions, sid = setup(tmp_path, ttl=60)
    assert snaps.load(sid) == b"queued" and snaps.cached(sid) == b"queued"
    set_status(sessions, sid, "running")
    assert snaps.cached(sid) == b"queued"  # a write elsewhere: stale until the TTL...
    snaps.invalidate(sid)  # ...unless this process made it
    assert snaps.cached(sid) is None and snaps.load(sid) == b"running"
    assert snaps.load("0000000000000000") is None


def test_other_writers_show_after_the_ttl(tmp_path: Path) -> None:
    snaps, sessions, sid = setup(tmp_path, ttl=0.2)
    snaps.load(sid)
    set_status(sessions, sid, "running")
    time.sleep(0.25)
    assert snaps.cached(sid) is None and snaps.load(sid) == b"running"


def test_a_read_racing_a_write_is_not_cached(tmp_path: Path) -> None:
    snaps, sessions, sid = setup(tmp_path, ttl=60)
    original = snaps.render

    def render_then_write(study: Study) -> bytes:
        body = original(study)
        snaps.invalidate(sid)  # the scheduler wrote while this read was rendering
        return body

    snaps.render = render_then_write
    assert snaps.load(sid) == b"queued"
    assert snaps.cached(sid) is None


def test_zero_ttl_never_caches(tmp_path: Path) -> None:
    snaps, _, sid = setup(tmp_path, ttl=0)
    assert snaps.load(sid) == b"queued" and snaps.cached(sid) is None
