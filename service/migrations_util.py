"""What the Alembic environment (service/migrations/env.py) and the schema tests share."""

from __future__ import annotations

from typing import Any

VERSION_TABLE = "app_alembic_version"  # Optuna owns `alembic_version` in the same database


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Autogenerate looks at the service's tables only, never at Optuna's."""
    from service.models import Base

    if type_ == "table":
        return name in Base.metadata.tables
    if type_ in ("index", "unique_constraint", "foreign_key_constraint") and getattr(obj, "table", None) is not None:
        return obj.table.name in Base.metadata.tables
    return True
