"""Alembic environment for the service's tables only (Optuna migrates its own tables itself).

Used programmatically by `service.db.migrate` (the engine arrives in `config.attributes["engine"]`), or
from a shell for new revisions, with the database from the settings:

    ALPHASEARCH_DATABASE_URL=sqlite:///dev.db alembic -c service/alembic.ini revision --autogenerate -m "..."
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from service.migrations_util import VERSION_TABLE, include_object
from service.models import Base

ADVISORY_LOCK_ID = 0x616C7068  # "alph": serialises concurrent upgrades on PostgreSQL


def run_migrations_online() -> None:
    engine = context.config.attributes.get("engine")
    if engine is None:
        from service.db import make_engine
        from service.settings import Settings

        engine = make_engine(Settings().resolved_database_url)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_lock({ADVISORY_LOCK_ID})"))
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                version_table=VERSION_TABLE,
                include_object=include_object,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_unlock({ADVISORY_LOCK_ID})"))
                connection.commit()


run_migrations_online()
