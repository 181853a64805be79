"""/api/v1/studies/{id}/validations against SQLite and PostgreSQL: errors that name the field, idempotent
POSTs, the embedded scheduler training the validation for real (in-process executor), its runs and regret
in GET, and the 0003 migration up and down.

Both backends share one data dir, so the second backend's study and validation come from the run cache (as
do the runs the library test already trained with the same tiny recipe, tests/alphasearch/test_validation.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alphasearch.executor import InProcessExecutor
from service.api.main import create_app
from tests.alphasearch.test_validation import TINY
from tests.service.conftest import make_settings
from tests.service.test_calibrate_api import empty_database  # noqa: F401 - a fixture

BODY = {"width": 96, "seeds": 2}


@pytest.fixture(scope="class")
def app_client(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.getbasetemp() / "validation-data"  # shared by both backends: one run cache
    app = create_app(make_settings(backend, data), executor_factory=lambda name: InProcessExecutor(threads=1))
    with TestClient(app) as c:
        yield c


def wait(client: TestClient, path: str, done: tuple[str, ...], timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if body["status"] in done:
            return body
        assert time.monotonic() < deadline, f"{path} still {body['status']}: {body}"
        time.sleep(0.3)


@pytest.fixture(scope="class")
def study(app_client: TestClient) -> dict[str, Any]:
    r = app_client.post("/api/v1/studies", json=TINY)
    assert r.status_code == 202, r.text
    return r.json()


@pytest.fixture(scope="class")
def finished(app_client: TestClient, study: dict) -> dict[str, Any]:
    done = wait(app_client, f"/api/v1/studies/{study['id']}", ("completed", "failed", "cancelled"))
    assert done["status"] == "completed", done["error"]
    return done


@pytest.fixture(scope="class")
def validated(app_client: TestClient, finished: dict) -> dict[str, Any]:
    r = app_client.post(f"/api/v1/studies/{finished['id']}/validations", json=BODY)
    assert r.status_code == 202, r.text
    listed = app_client.get(f"/api/v1/studies/{finished['id']}/validations").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == r.json()["id"]
    return wait(app_client, f"/api/v1/studies/{finished['id']}/validations/{r.json()['id']}", ("completed", "failed"))


def fields_of(response: Any) -> list[str]:
    return [e["field"] for e in response.json()["detail"]]


class TestValidationsAPI:
    def test_an_unfinished_or_unknown_study_cannot_be_validated(self, app_client: TestClient) -> None:
        r = app_client.post("/api/v1/studies", json={**TINY, "name": "cancelled at once"})
        sid = r.json()["id"]
        app_client.post(f"/api/v1/studies/{sid}/cancel")
        conflict = app_client.post(f"/api/v1/studies/{sid}/validations", json={})
        assert conflict.status_code == 409, conflict.text
        assert "cannot be validated yet" in conflict.json()["detail"] and "completed" in conflict.json()["detail"]
        assert app_client.post("/api/v1/studies/nosuchstudy/validations", json={}).status_code == 404
        assert app_client.get("/api/v1/studies/nosuchstudy/validations").status_code == 404
        assert app_client.get(f"/api/v1/studies/{sid}/validations").json() == {"data": [], "count": 0}

    def test_bad_bodies_are_422_naming_the_field(self, app_client: TestClient, finished: dict) -> None:
        path = f"/api/v1/studies/{finished['id']}/validations"
        narrow = app_client.post(path, json={"width": 64})
        assert narrow.status_code == 422 and fields_of(narrow) == ["width"]
        assert "not larger than the widest proxy (64)" in narrow.json()["detail"][0]["message"]
        assert fields_of(app_client.post(path, json={"width": 100})) == ["width"]  # not a multiple of head_dim
        assert fields_of(app_client.post(path, json={"seeds": 0})) == ["seeds"]
        assert fields_of(app_client.post(path, json={"width": "wide"})) == ["width"]
        assert fields_of(app_client.post(path, json={"widht": 96})) == ["widht"]
        assert app_client.get(path).json()["count"] == 0  # nothing was stored by a bad request

    def test_the_scheduler_trains_it_and_get_shows_runs_and_regret(self, app_client: TestClient, finished: dict,
                                                                   validated: dict) -> None:  # fmt: skip
        v = validated
        assert v["status"] == "completed", v["error"]
        assert (v["width"], v["seeds"], v["study_id"]) == (96, 2, finished["id"])
        assert v["progress"] == {"done": 14, "total": 14, "fraction": 1.0, "message": "done"}
        assert len(v["runs"]) == 14 and {r["outcome"] for r in v["runs"]} == {"completed"}
        labels = [p["label"] for p in v["result"]["points"]]
        assert labels[:3] == ["recommended", "(1, 1)", "(0.5, 0.5)"] and len(labels) == 7
        assert set(v["regret"]) == {"recommended", "(1, 1)", "(0.5, 0.5)"}
        for r in v["regret"].values():
            assert r["nats"] >= 0
            assert r["is_best"] or (r["noise"] is not None and "paired" in r["noise_kind"])
        rec = app_client.get(f"/api/v1/studies/{finished['id']}/recommendation").json()
        assert rec["backtest"]["status"] == "ok" and rec["backtest"]["held_out_width"] == 64

    def test_the_same_body_returns_the_same_validation(self, app_client: TestClient, finished: dict,
                                                       validated: dict) -> None:  # fmt: skip
        path = f"/api/v1/studies/{finished['id']}/validations"
        again = app_client.post(path, json=BODY)
        assert again.status_code == 202 and again.json()["id"] == validated["id"]
        assert again.json()["status"] == "completed"
        other = app_client.post(path, json={"width": 96, "seeds": 1})
        assert other.status_code == 202 and other.json()["id"] != validated["id"]
        assert app_client.get(path).json()["count"] == 2


def test_migration_0003_upgrades_and_downgrades(empty_database: str) -> None:  # noqa: F811
    from alembic import command
    from sqlalchemy import inspect

    from service.db import alembic_config, make_engine, migrate

    engine = make_engine(empty_database)
    try:
        migrate(engine)
        assert "app_validations" in set(inspect(engine).get_table_names())
        indexes = {i["name"] for i in inspect(engine).get_indexes("app_validations")}
        assert "ix_app_validations_status_created_at" in indexes
        command.downgrade(alembic_config(engine), "0002")
        tables = set(inspect(engine).get_table_names())
        assert "app_validations" not in tables and "app_calibrations" in tables
        command.upgrade(alembic_config(engine), "head")
        assert "app_validations" in set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
