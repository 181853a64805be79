"""/api/v1/calibrations against SQLite and PostgreSQL, studies that use a stored calibration, auth, and the
0002 migration up and down.

The app runs its embedded scheduler (in-process executor), which trains the queued calibration for real.
Both backends share one data dir, so the second backend's calibration comes from the run cache (and so
do the library tests' runs of the same tiny settings, tests/alphasearch/test_calibrate.py).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alphasearch.executor import InProcessExecutor
from service.api.main import create_app
from tests.alphasearch.test_calibrate import TINY
from tests.service.conftest import ADMIN_URL, _libpq, make_settings

BODY = {"widths": [32], **TINY}
STUDY = {"preset": "smoke", "target_width": 1024, "target_depth": 8, "proxy_widths": [32], "proxy_depths": [2],
         "tokens_per_trial": 12 * 8 * 32, "batch_size": 8, "seq_len": 32, "trials_per_width": 4}  # fmt: skip


@pytest.fixture(scope="class")
def app_client(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.getbasetemp() / "calibrate-data"  # shared by both backends: one run cache
    # One trainer thread (as tests/alphasearch/test_calibrate.py): two spin against other jobs on a small box.
    app = create_app(make_settings(backend, data), executor_factory=lambda name: InProcessExecutor(threads=1))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="class")
def calibrated(app_client: TestClient) -> dict[str, Any]:
    r = app_client.post("/api/v1/calibrations", json=BODY)
    assert r.status_code == 202, r.text
    [row] = r.json()["data"]
    deadline = time.monotonic() + 300
    while row["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"calibration still {row['status']}: {row}"
        time.sleep(0.3)
        row = app_client.get(f"/api/v1/calibrations/{row['id']}").json()
    assert row["status"] == "completed", row["error"]
    return row


def fields_of(response: Any) -> list[str]:
    return [e["field"] for e in response.json()["detail"]]


class TestCalibrationsAPI:
    def test_post_queues_one_per_width_and_the_scheduler_runs_it(self, app_client: TestClient,
                                                                 calibrated: dict) -> None:  # fmt: skip
        row = calibrated
        assert row["width"] == 32 and row["depth"] == 2 and row["norm"] == "dyt"
        assert (row["steps"], row["batch_size"], row["seq_len"]) == (12, 8, 32)
        assert row["settings"]["lrs"] == [1e-3, 4e-3] and row["settings"]["seeds"] == 3
        result = row["result"]
        assert row["regime"] == result["regime"] and row["regime"]["lr"] in (1e-3, 4e-3)
        assert row["snr"] == pytest.approx(result["alpha_effect"] / result["seed_std"])
        assert row["gap"] == result["gap"] and row["stall_rate"] == 0.0
        assert len(result["ladder"]) == 4 and len(result["seed_runs"]) == 3 and len(result["grid_runs"]) == 4
        assert row["progress"] == {"phase": "done", "done": 10, "total": 10, "message": "calibrated"}
        assert row["started_at"] and row["finished_at"] and row["error"] is None
        assert row["links"]["self"] == f"/api/v1/calibrations/{row['id']}"
        assert len(row["corpus_fingerprint"]) == 64 and row["code_version"] == result["code_version"]

    def test_list_filters_and_paginates(self, app_client: TestClient, calibrated: dict) -> None:
        listed = app_client.get("/api/v1/calibrations", params={"width": 32, "status": "completed"}).json()
        assert calibrated["id"] in [c["id"] for c in listed["data"]] and listed["count"] >= 1
        assert app_client.get("/api/v1/calibrations", params={"width": 64}).json()["count"] == 0
        assert app_client.get("/api/v1/calibrations", params={"norm": "derf"}).json()["data"] == []
        page = app_client.get("/api/v1/calibrations", params={"limit": 1}).json()
        assert len(page["data"]) == 1
        assert app_client.get("/api/v1/calibrations", params={"status": "sleeping"}).status_code == 422

    @pytest.mark.parametrize("unknown", ["0123456789abcdef", "no such id!"])
    def test_unknown_id_is_404(self, app_client: TestClient, unknown: str) -> None:
        r = app_client.get(f"/api/v1/calibrations/{unknown}")
        assert r.status_code == 404 and "no calibration" in r.json()["detail"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"widths": [48]}, "widths"),  # not a multiple of head_dim
            ({"widths": []}, "widths"),
            ({"widths": [64], "lrs": [0.002, -1]}, "lrs"),
            ({"widths": [64], "seeds": 2}, "seeds"),
            ({"widths": [64], "steps": 10**7}, "steps"),  # over the preset's token cap
            ({"widths": [64], "corpus": "/no/such/file.txt"}, "corpus"),
            ({"widths": [64], "colour": "red"}, "colour"),
            ({"widths": [64], "norm": "rmsnorm"}, "norm"),
        ],
    )
    def test_invalid_request_is_422_naming_the_field(
        self, app_client: TestClient, body: dict, field: str
    ) -> None:
        before = app_client.get("/api/v1/calibrations").json()["count"]
        r = app_client.post("/api/v1/calibrations", json=body)
        assert r.status_code == 422, r.text
        assert field in fields_of(r) and all(e["message"] for e in r.json()["detail"])
        assert app_client.get("/api/v1/calibrations").json()["count"] == before  # nothing queued

    # -- studies that use it ---------------------------------------------------------------------------
    def test_a_study_with_use_calibration_gets_the_calibrated_lr(self, app_client: TestClient,
                                                                 calibrated: dict) -> None:  # fmt: skip
        r = app_client.post("/api/v1/studies", json={**STUDY, "use_calibration": True, "name": "calibrated"})
        assert r.status_code == 202, r.text
        study = r.json()
        app_client.post(
            f"/api/v1/studies/{study['id']}/cancel"
        )  # what it stored is the point, not its training
        regime = calibrated["regime"]
        assert study["spec"]["use_calibration"] is True
        assert study["spec"]["regimes"] == {
            "32": {"lr": regime["lr"], "warmup_steps": regime["warmup_steps"], "rmsnorm_lr": regime["rmsnorm_lr"]}
        }
        # A regime given by hand wins; it may also cover a width nobody calibrated.
        both = {**STUDY, "proxy_widths": [32, 64], "use_calibration": True, "regimes": {"64": {"lr": 0.0123}}}
        r = app_client.post("/api/v1/studies", json=both)
        assert r.status_code == 202, r.text
        app_client.post(f"/api/v1/studies/{r.json()['id']}/cancel")
        assert r.json()["spec"]["regimes"]["64"] == {"lr": 0.0123}
        assert r.json()["spec"]["regimes"]["32"]["lr"] == regime["lr"]

    def test_use_calibration_without_one_is_422_with_the_field_and_the_fix(self, app_client: TestClient,
                                                                           calibrated: dict) -> None:  # fmt: skip
        before = app_client.get("/api/v1/studies").json()["count"]
        r = app_client.post(
            "/api/v1/studies", json={**STUDY, "proxy_widths": [32, 64], "use_calibration": True}
        )
        assert r.status_code == 422 and fields_of(r) == ["use_calibration"]
        message = r.json()["detail"][0]["message"]
        assert "alphasearch calibrate --widths 64" in message and "use_calibration=false" in message
        longer = app_client.post(
            "/api/v1/studies", json={**STUDY, "tokens_per_trial": 24 * 8 * 32, "use_calibration": True}
        )
        assert longer.status_code == 422 and fields_of(longer) == ["use_calibration"]  # another run length
        # Proxies for another target width start from another init (width-matched): not this calibration's lr.
        wider = app_client.post("/api/v1/studies", json={**STUDY, "target_width": 2048, "use_calibration": True})
        assert wider.status_code == 422 and fields_of(wider) == ["use_calibration"]
        assert "--set target_width=2048" in wider.json()["detail"][0]["message"]
        batch = app_client.post("/api/v1/batches", json={"studies": [{**STUDY, "use_calibration": True},
                                                                     {**STUDY, "proxy_widths": [64], "use_calibration": True}]})  # fmt: skip
        assert batch.status_code == 422
        assert [(e["index"], e["field"]) for e in batch.json()["detail"]] == [(1, "use_calibration")]
        assert app_client.get("/api/v1/studies").json()["count"] == before

    def test_the_lookup_skips_a_newer_calibration_made_for_another_target_width(self, backend: str) -> None:
        """The target width and init scaling live in a calibration's settings, not in columns: the lookup
        filters them after the SQL query, newest first, on both backends."""
        from alphasearch.calibrate import CalibrationSettings, calibration_key
        from alphasearch.executor import code_version
        from alphasearch.spec import StudySpec
        from service import crud
        from service.calibrations import corpus_fingerprint
        from service.db import make_engine, make_sessionmaker

        width = 96  # a width no other test here calibrates
        sessions = make_sessionmaker(make_engine(backend))
        ids = {}
        with sessions() as s, s.begin():
            for target in (1024, 2048, 4096):  # stored oldest first: the newest is for target width 4096
                settings = CalibrationSettings.from_dict({**TINY, "target_width": target}).to_dict()
                result = {"width": width, "settings": settings, "corpus_fingerprint": corpus_fingerprint(None),
                          "code_version": code_version(), "regime": {"lr": target * 1e-6}}  # fmt: skip
                ids[target] = crud.store_calibration(s, result=result).id
                time.sleep(0.01)  # distinct finished_at
        with sessions() as s:
            for target in (1024, 2048, 4096, 512):
                spec = StudySpec.from_dict({**STUDY, "target_width": target, "proxy_widths": [width]})
                found = crud.find_calibration(s, key=calibration_key(spec, width))
                assert (found.id if found else None) == ids.get(target)
            fixed = StudySpec.from_dict({**STUDY, "proxy_widths": [width], "init_scaling": "fixed"})
            assert crud.find_calibration(s, key=calibration_key(fixed, width)) is None

    def test_openapi_lists_the_calibration_endpoints(self, app_client: TestClient) -> None:
        spec = app_client.get("/openapi.json").json()
        assert {"post", "get"} <= set(spec["paths"]["/api/v1/calibrations"])
        assert "get" in spec["paths"]["/api/v1/calibrations/{calibration_id}"]
        study_fields = spec["components"]["schemas"]["StudyCreate"]["properties"]
        assert {"use_calibration", "regimes"} <= set(study_fields)


def test_writes_need_the_token_reads_do_not(tmp_path: Path) -> None:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, scheduler=False, api_token="s3cret"
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/v1/calibrations", json={"widths": [64]}).status_code == 401
        wrong = client.post(
            "/api/v1/calibrations", json={"widths": [64]}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 403
        ok = client.post(
            "/api/v1/calibrations", json={"widths": [64, 128]}, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 202 and [c["width"] for c in ok.json()["data"]] == [64, 128]
        assert all(c["status"] == "queued" and c["progress"]["total"] == 4 + 3 + 9 for c in ok.json()["data"])
        assert client.get("/api/v1/calibrations").json()["count"] == 2  # the scheduler is off: they wait


# -- the migration ----------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody else uses (the migration test drops tables)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    import psycopg

    try:
        admin = psycopg.connect(_libpq(ADMIN_URL), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable at {ADMIN_URL} ({exc.__class__.__name__})")
    name = f"alphasearch_migrate_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_migration_0002_upgrades_and_downgrades(empty_database: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from service.db import alembic_config, make_engine, migrate

    engine = make_engine(empty_database)
    try:
        migrate(engine)
        tables = set(inspect(engine).get_table_names())
        assert {"app_calibrations", "app_studies"} <= tables
        indexes = {i["name"] for i in inspect(engine).get_indexes("app_calibrations")}
        assert {"ix_app_calibrations_key", "ix_app_calibrations_status_created_at"} <= indexes
        command.downgrade(alembic_config(engine), "0001")
        tables = set(inspect(engine).get_table_names())
        assert "app_calibrations" not in tables and "app_studies" in tables
        command.upgrade(alembic_config(engine), "head")
        assert "app_calibrations" in set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- the scheduler's side ---------------------------------------------------------------------------------


def test_a_stopped_scheduler_leaves_its_calibration_to_the_next_one(tmp_path: Path,
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:  # fmt: skip
    """Stopping mid-calibration releases the lease with the row still running; the next scheduler claims it
    at once and finishes it. Two schedulers never both claim one calibration."""
    import threading

    from alphasearch.calibrate import CalibrationSettings
    from service import crud
    from service.calibrations import corpus_fingerprint
    from service.db import make_engine, make_sessionmaker, migrate
    from service.models import utcnow
    from service.scheduler import Scheduler

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    sessions = make_sessionmaker(engine)
    # The first scheduler has an empty run cache (so the stop really cuts runs short); the second shares the
    # session's cache (so it usually trains nothing: the other tests ran these settings).
    fresh = make_settings(str(engine.url), tmp_path / "data", scheduler=False)
    settings = make_settings(
        str(engine.url), tmp_path_factory.getbasetemp() / "calibrate-data", scheduler=False
    )
    with sessions() as s:
        cal = CalibrationSettings.from_dict(TINY)
        [row] = crud.create_calibrations(s, widths=[32], settings=cal.to_dict(),
                                         corpus_fingerprint=corpus_fingerprint(None), code_version="queued")  # fmt: skip
        s.commit()
    factory = lambda name: InProcessExecutor(threads=1)  # noqa: E731

    first = Scheduler(fresh, sessions, executor_factory=factory)
    first.stopping.set()  # a shutdown arriving while it calibrates: every run is cancelled at once
    assert first.run_next() == row.id
    with sessions() as s:
        stopped = crud.get_calibration(s, calibration_id=row.id)
        assert stopped.status == "running" and stopped.lease_expires_at is None and stopped.result is None

    wins: list[str] = []
    barrier = threading.Barrier(4)

    def claim(owner: str) -> None:
        barrier.wait()
        with sessions() as s, s.begin():
            if crud.claim_calibration(s, calibration_id=row.id, owner=owner, now=utcnow(), lease_s=30):
                wins.append(owner)

    threads = [threading.Thread(target=claim, args=(f"racer-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1  # the released lease goes to exactly one of them
    with sessions() as s, s.begin():
        crud.release_calibration_lease(s, calibration_id=row.id, owner=wins[0])

    second = Scheduler(settings, sessions, executor_factory=factory)
    assert second.run_next() == row.id
    with sessions() as s:
        done = crud.get_calibration(s, calibration_id=row.id)
        assert done.status == "completed" and done.result["regime"]["lr"] in TINY["lrs"]
        assert done.progress["done"] == done.progress["total"] == 10
        assert done.code_version == done.result["code_version"] != "queued"  # what the run really used
    assert second.run_next() is None  # nothing left
    engine.dispose()
