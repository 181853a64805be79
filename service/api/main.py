"""The FastAPI app: `create_app(settings)`. Start-up waits for the database, migrates it, then starts
the embedded scheduler (unless ALPHASEARCH_SCHEDULER=false); shutdown stops the scheduler so a restart
resumes its studies.

    >>> import uvicorn
    >>> uvicorn.run(create_app(Settings()), host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool

from alphasearch.executor import Executor
from service.api import errors
from service.api.limits import BodySizeLimit
from service.api.routes import batches, calibrations, corpora, recommendations, studies, system, validations
from service.api.routes.studies import study_public
from service.dashboard import install as install_dashboard
from service.db import make_engine, make_sessionmaker, migrate, redacted, wait_for_database
from service.metrics import make_registry
from service.pooled import PooledRecommendations
from service.settings import Settings
from service.snapshots import StudySnapshots

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, *, executor_factory: Callable[[str], Executor] | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings: Settings = app.state.settings  # the source of truth, so a test may swap it before start-up
        url = settings.resolved_database_url
        engine = make_engine(url)
        await run_in_threadpool(wait_for_database, engine, settings.db_wait_s)
        await run_in_threadpool(migrate, engine)
        sessions = make_sessionmaker(engine)
        app.state.engine, app.state.sessions = engine, sessions
        app.state.pooled = PooledRecommendations(sessions, settings.recommendations_ttl_s)
        app.state.registry = make_registry(sessions)
        app.state.snapshots = StudySnapshots(
            sessions, settings.study_cache_ttl_s, lambda study: study_public(study).model_dump_json().encode()
        )
        app.state.scheduler = None
        log.info("database %s migrated", redacted(url))
        if settings.scheduler:
            from service.scheduler import Scheduler

            kwargs = {"executor_factory": executor_factory} if executor_factory else {}
            app.state.scheduler = Scheduler(settings, sessions, on_finished=app.state.pooled.invalidate,
                                            on_change=app.state.snapshots.invalidate, **kwargs)  # fmt: skip
            app.state.scheduler.start()
        try:
            yield
        finally:
            if app.state.scheduler is not None:
                await run_in_threadpool(app.state.scheduler.stop, 30.0)
            engine.dispose()

    app = FastAPI(
        title="alphasearch",
        summary="Which DyT alpha0 should your Transformer use? Studies, recommendations and loss heatmaps.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    api = APIRouter(prefix=API_PREFIX)
    for module in (recommendations, studies, batches, calibrations, corpora, validations):  # the most polled first: matching is in order
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(system.router)
    install_dashboard(app)  # the web dashboard at / (service/dashboard)
    # Corpus uploads stream to disk under their own limit (ALPHASEARCH_MAX_CORPUS_BYTES, routes/corpora.py).
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, streamed=(f"{API_PREFIX}/corpora",))
    return app
