"""Fixtures for the dashboard's browser tests: a real server, a finished smoke study, Debian's chromium.

The server is `alphasearch serve` in a subprocess (uvicorn, the real entry point) on a free loopback port,
with its own data dir, the in-process executor and an API token, so the page's token field is exercised
by every write. The browser is the system chromium driven by Playwright through `executable_path`
(`playwright install` downloads a browser and is never used). Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
TOKEN = "dashboard-test-token"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1366, "height": 768}  # a laptop screen: the size the dashboard is laid out for

# Two proxy widths x 8 trials of 4 steps: enough finished trials per width for a loss surface (7+) and a
# width fit, and it finishes in about a minute on a busy 2-core box.
SMOKE = {
    "preset": "smoke",
    "name": "browser-smoke",
    "target_width": 1024,
    "target_depth": 8,
    "trials_per_width": 8,
    "tokens_per_trial": 16 * 64 * 4,
    "eval_interval": 2,
    "warmup_steps": 1,
}
# Long enough to still be running when the test clicks cancel; it never finishes.
LONG = {
    **SMOKE,
    "name": "browser-long",
    "trials_per_width": 60,
    "tokens_per_trial": 16 * 64 * 40,
    "eval_interval": 10,
}


def chromium_path() -> str | None:
    for candidate in (
        os.environ.get("ALPHASEARCH_TEST_CHROMIUM"),
        shutil.which("chromium"),
        "/usr/bin/chromium",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The API + dashboard in a subprocess; `api()` is an authenticated client for setting up state."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASEARCH_", "RAY_"))}
        env.update(
            ALPHASEARCH_DATA_DIR=str(data_dir),
            ALPHASEARCH_EXECUTOR="inprocess",
            ALPHASEARCH_SCHEDULER_POLL_S="0.3",
            ALPHASEARCH_RECOMMENDATIONS_TTL_S="0",
            ALPHASEARCH_API_TOKEN=TOKEN,
            PYTHONUNBUFFERED="1",
        )
        cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--no-access-log"]
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        self.client = httpx.Client(
            base_url=f"{self.url}/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server did not come up in {timeout:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        r = self.client.post("/studies", json=spec)
        assert r.status_code == 202, r.text
        return r.json()

    def wait_for(self, study_id: str, statuses: tuple[str, ...], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            study = self.client.get(f"/studies/{study_id}").json()
            if study["status"] in statuses:
                return study
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"study {study_id} still {study['status']} after {timeout:.0f} s:\n{self.tail()}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("chromium not found: install Debian's package (`apt-get install -y chromium`; scripts/test.sh "
                    "does it) or set ALPHASEARCH_TEST_CHROMIUM to a Chromium binary")  # fmt: skip
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright Python package is missing: pip install -e '.[dev]'")
    return path


@pytest.fixture(scope="session")
def server(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("dashboard-server")
    srv = Server(tmp / "data", tmp / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def finished_study(server: Server) -> dict[str, Any]:
    study = server.submit(SMOKE)
    return server.wait_for(study["id"], ("completed", "failed", "cancelled"), timeout=300)


@pytest.fixture(scope="session")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Console:
    """Console errors and uncaught exceptions of one page; `expect()` allows a known, wanted one."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def expect(self, fragment: str) -> None:
        self.allowed.append(fragment)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh browser context (empty localStorage) at laptop size with clipboard access."""
    origin = server.url
    context = browser.new_context(viewport=VIEWPORT, permissions=["clipboard-read", "clipboard-write"])
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def console(page: Any) -> Console:
    """What the page logged as an error; every test asserts there is nothing unexpected."""
    return Console(page)


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky top bar would otherwise land mid-page
    page.screenshot(path=str(path), full_page=full_page)
    return path
