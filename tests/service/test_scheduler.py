"""Claiming is atomic (two schedulers never run one study) and leases hand over dead schedulers' studies,
on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from alphasearch.spec import StudySpec
from service import crud
from service.db import make_engine, make_sessionmaker, migrate
from service.models import utcnow

SPEC = {"preset": "smoke", "target_width": 1024, "target_depth": 8}


@pytest.fixture(scope="class")
def sessions(backend: str):  # type: ignore[no-untyped-def]
    engine = make_engine(backend)
    migrate(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


class TestClaims:
    def test_racing_schedulers_claim_a_study_once(self, sessions) -> None:  # type: ignore[no-untyped-def]
        for _ in range(5):
            with sessions() as s:
                sid = crud.create_study(s, spec=StudySpec.from_dict(SPEC)).id
                s.commit()
            barrier, wins = threading.Barrier(8), []

            def claim(owner: str, sid: str = sid, barrier: threading.Barrier = barrier, wins: list = wins) -> None:
                barrier.wait()
                with sessions() as s, s.begin():
                    if crud.claim(s, study_id=sid, owner=owner, now=utcnow(), lease_s=30):
                        wins.append(owner)

            threads = [threading.Thread(target=claim, args=(f"scheduler-{i}",)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(wins) == 1
            with sessions() as s:
                study = crud.get_study(s, study_id=sid)
                assert study.status == "running" and study.lease_owner == wins[0]

    def test_a_lapsed_lease_is_taken_over_a_live_one_is_not(self, sessions) -> None:  # type: ignore[no-untyped-def]
        with sessions() as s, s.begin():
            sid = crud.create_study(s, spec=StudySpec.from_dict(SPEC)).id
        now = utcnow()
        with sessions() as s, s.begin():
            assert crud.claim(s, study_id=sid, owner="dead", now=now, lease_s=30)
        with sessions() as s, s.begin():
            assert not crud.claim(s, study_id=sid, owner="other", now=now + timedelta(seconds=10), lease_s=30)
            assert sid not in crud.claimable(s, now=now + timedelta(seconds=10))
        later = now + timedelta(seconds=31)
        with sessions() as s, s.begin():
            assert sid in crud.claimable(s, now=later)
            assert crud.claim(s, study_id=sid, owner="other", now=later, lease_s=30)
        with sessions() as s, s.begin():  # the old owner can neither renew nor finish it any more
            assert not crud.renew_lease(s, study_id=sid, owner="dead", now=later, lease_s=30)
            crud.finish(s, study_id=sid, owner="dead", status="failed")
        with sessions() as s:
            assert crud.get_study(s, study_id=sid).status == "running"


def test_claims_skip_finished_studies(tmp_path: Path) -> None:
    sessions = make_sessionmaker(engine := make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    migrate(engine)
    with sessions() as s, s.begin():
        sid = crud.create_study(s, spec=StudySpec.from_dict(SPEC)).id
    with sessions() as s, s.begin():
        crud.request_cancel(s, study_id=sid)
    with sessions() as s, s.begin():
        assert crud.claimable(s, now=utcnow()) == []
        assert not crud.claim(s, study_id=sid, owner="x", now=utcnow(), lease_s=30)
