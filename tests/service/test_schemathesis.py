"""Property-based API test: schemathesis generates requests from the app's own OpenAPI schema (bounded
examples), against SQLite and PostgreSQL; no request may produce a 5xx, and answers must match the schema.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from service.api.main import create_app
from service.settings import Settings
from tests.service.conftest import make_settings

# One app object: schemathesis reads its schema at import; the fixture below points it at a database and
# runs its lifespan (migrations, state) once per backend. The scheduler is off: nothing trains.
APP = create_app(Settings(scheduler=False))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", params=["sqlite", "postgres"], autouse=True)
def running_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    url = f"sqlite:///{tmp / 'db.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    APP.state.settings = make_settings(url, tmp, scheduler=False)
    with TestClient(APP):
        yield


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])  # fmt: skip
def test_no_server_errors(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])
