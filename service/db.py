"""Engine, sessions and start-up for the service's database (SQLite by default, PostgreSQL for scale-out).

Start-up order (STYLE: "start-up waits for the database, then migrates"): `wait_for_database`, then
`migrate` runs `alembic upgrade head` programmatically. Both the API and `alphasearch scheduler` do it, so
whichever starts first creates the schema; PostgreSQL serialises concurrent upgrades with an advisory
lock, SQLite with its writer lock plus one retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from alphasearch.errors import StorageError

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def redacted(url: str) -> str:
    """The URL with any password masked: the only form of it that goes to a log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported by create_engine; never echo it raw
        return "<unparsable database URL>"


def make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # Threads of one process share the engine; the scheduler and Optuna write while the API reads.
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        kwargs.update(pool_size=20, max_overflow=40)
        if make_url(url).database not in (None, "", ":memory:"):
            Path(make_url(url).database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs.update(pool_size=10, max_overflow=40, pool_recycle=1800)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    # WAL: readers never block the writer (the scheduler, Optuna) and vice versa. It is a property of the
    # file, so Optuna's own engine on the same file benefits too.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One short transaction; database errors come out as the library's StorageError."""
    try:
        with factory() as session, session.begin():
            yield session
    except SQLAlchemyError as exc:
        raise StorageError(f"database error: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc


def wait_for_database(engine: Engine, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            if time.monotonic() >= deadline:
                raise StorageError(
                    f"cannot reach the database at {redacted(str(engine.url))} after {timeout_s:.0f} s "
                    f"({type(exc.orig).__name__}); check ALPHASEARCH_DATABASE_URL and that the server is up"
                ) from exc
            log.info("waiting for the database at %s", redacted(str(engine.url)))
            time.sleep(1.0)


def alembic_config(engine: Engine | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """`alembic upgrade head` on this engine's database (idempotent)."""
    from alembic import command

    for attempt in range(3):
        try:
            command.upgrade(alembic_config(engine), "head")
            return
        except OperationalError:  # SQLite: another process migrated at the same moment; look again
            if attempt == 2:
                raise
            time.sleep(1.0)
