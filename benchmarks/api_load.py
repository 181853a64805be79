"""API latency under load: GET /recommendations and GET /studies/{id} at N concurrent clients while a
study trains (issue 5; target p99 <= 50 ms at 50 clients). Results go to docs/benchmarks.md.

What it does, all on loopback:
1. starts `alphasearch serve` (a real uvicorn process) on a fresh data dir (embedded SQLite default);
2. runs one tiny study to completion, so /recommendations has something to pool;
3. submits a longer study and waits until it is training (trials in flight);
4. for each endpoint: N keep-alive connections in a closed loop (each sends its next request as soon as
   the previous answer arrived) for a fixed time, after a short warm-up; latency = send to last byte;
5. checks the study kept training during the measurement (its finished-trial count went up, or its
   trials were in flight throughout) and prints p50 / p90 / p99 / max and requests/s.

The load generator is a minimal asyncio HTTP/1.1 client (in this process, on its own core as far as the
OS allows) rather than httpx, whose per-request CPU cost would dominate a 2-core machine.

    .venv/bin/python benchmarks/api_load.py                      # defaults: ray executor, 50 clients, 15 s
    .venv/bin/python benchmarks/api_load.py --executor inprocess --clients 50 --seconds 15 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
SEED_STUDY = {"preset": "smoke", "target_width": 1024, "target_depth": 8, "trials_per_width": 4,
              "tokens_per_trial": 16 * 64 * 10, "eval_interval": 5, "warmup_steps": 2, "name": "bench-seed"}  # fmt: skip
# Trains for minutes on 2 cores: the load phase must fall inside it.
TRAINING_STUDY = {"preset": "smoke", "target_width": 2048, "target_depth": 16, "trials_per_width": 40,
                  "tokens_per_trial": 16 * 64 * 60, "name": "bench-training"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _client(host: str, port: int, path: str, stop_at: float, record_from: float, out: list[float],
                  errors: list[str]) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    try:
        while (t0 := loop.time()) < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            t1 = loop.time()
            if status != 200:
                errors.append(f"HTTP {status}")
            elif t0 >= record_from:
                out.append(t1 - t0)
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        errors.append(type(exc).__name__)
    finally:
        writer.close()


async def _load(host: str, port: int, path: str, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    record_from, stop_at = start + warmup, start + warmup + seconds
    latencies: list[float] = []
    errors: list[str] = []
    await asyncio.gather(*(_client(host, port, path, stop_at, record_from, latencies, errors) for _ in range(clients)))
    latencies.sort()

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "path": path, "clients": clients, "seconds": seconds, "requests": len(latencies),
        "rps": round(len(latencies) / seconds, 1), "p50_ms": round(pct(0.50), 2), "p90_ms": round(pct(0.90), 2),
        "p99_ms": round(pct(0.99), 2), "max_ms": round(1000 * latencies[-1], 2),
        "mean_ms": round(1000 * statistics.fmean(latencies), 2), "errors": len(errors),
    }  # fmt: skip


def wait_status(api: httpx.Client, sid: str, done: tuple[str, ...], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        study = api.get(f"/api/v1/studies/{sid}").json()
        if study["status"] in done:
            return study
        if time.monotonic() > deadline:
            raise SystemExit(f"study {sid} still {study['status']} after {timeout:.0f} s")
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=15.0, help="measured time per endpoint")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--executor", choices=("ray", "inprocess"), default="ray")
    ap.add_argument("--access-log", action="store_true", help="keep uvicorn's per-request log on")
    ap.add_argument("--database-url", default=None, help="default: SQLite in a fresh data dir")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="alphasearch-load-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASEARCH_", "RAY_"))}
    env.update(ALPHASEARCH_DATA_DIR=str(tmp / "data"), ALPHASEARCH_EXECUTOR=args.executor)
    if args.database_url:
        env["ALPHASEARCH_DATABASE_URL"] = args.database_url
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--log-level", "warning",
           "--access-log" if args.access_log else "--no-access-log"]  # fmt: skip
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        api = httpx.Client(base_url=base, timeout=30)
        for _ in range(240):
            try:
                if api.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        seed = api.post("/api/v1/studies", json=SEED_STUDY).json()["id"]
        assert wait_status(api, seed, ("completed", "failed", "cancelled"), 600)["status"] == "completed"
        training = api.post("/api/v1/studies", json=TRAINING_STUDY).json()["id"]
        wait_status(api, training, ("running",), 120)
        time.sleep(5.0)  # let the executor get its trials going
        before = api.get(f"/api/v1/studies/{training}").json()
        paths = ["/api/v1/recommendations?width=4096&depth=32", f"/api/v1/studies/{training}"]
        results = [asyncio.run(_load("127.0.0.1", port, p, args.clients, args.seconds, args.warmup)) for p in paths]
        after = api.get(f"/api/v1/studies/{training}").json()
        trials = api.get(f"/api/v1/studies/{training}/trials", params={"limit": 1000}).json()["data"]
        running = sum(t["state"] == "RUNNING" for t in trials)
        report = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            "executor": args.executor, "database": "postgresql" if args.database_url else "sqlite",
            "access_log": args.access_log, "results": results,
            "training": {"status_after": after["status"], "trials_done_before": before["progress"]["trials_done"],
                         "trials_done_after": after["progress"]["trials_done"], "trials_in_flight_after": running,
                         "trials_total": after["progress"]["trials_total"]},
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        }  # fmt: skip
        api.post(f"/api/v1/studies/{training}/cancel")
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['machine']}; executor {args.executor}; {report['database']}; load avg {report['loadavg_1m_after']}")
    t = report["training"]
    print(f"study training during the run: {t['trials_done_before']} -> {t['trials_done_after']} of {t['trials_total']} "
          f"trials done, {t['trials_in_flight_after']} in flight at the end, status {t['status_after']}")  # fmt: skip
    print(f"{'endpoint':58} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>6}")
    for r in results:
        print(f"{r['path']:58} {r['rps']:8.1f} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['max_ms']:8.2f} {r['errors']:6d}")  # fmt: skip


if __name__ == "__main__":
    main()
