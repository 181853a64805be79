"""Optuna's tables created by several processes at once on a fresh PostgreSQL database (a server's scheduler
and a CLI, or two workers of one service): every creator must get a working storage. Without the retry in
`alphasearch.search.make_storage`, the losers of the CREATE TYPE race failed with a UniqueViolation (CI, on
the validations API's first request against a fresh database)."""

from __future__ import annotations

import multiprocessing as mp

from tests.service.conftest import fresh_postgres

CREATORS = 4


def _create(url: str, barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:
    from alphasearch.search import make_storage

    barrier.wait()
    try:
        storage = make_storage(url)
        out.put(("ok", len(storage.get_all_studies())))
    except Exception as exc:  # reported to the parent, which fails the test with it
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def test_concurrent_creators_all_get_a_storage_on_a_fresh_database() -> None:
    ctx = mp.get_context("spawn")
    with fresh_postgres() as url:
        barrier, out = ctx.Barrier(CREATORS), ctx.Queue()
        procs = [ctx.Process(target=_create, args=(url, barrier, out)) for _ in range(CREATORS)]
        for p in procs:
            p.start()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
    assert results == [("ok", 0)] * CREATORS, results
