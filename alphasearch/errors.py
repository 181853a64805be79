"""The one exception tree of alphasearch.

Every error the library raises on purpose descends from `AlphaSearchError`, so a caller (the CLI, the
service) can catch one class and show the message. Messages name the offending field and say the fix.
"""

from __future__ import annotations


class AlphaSearchError(Exception):
    """Root of every error alphasearch raises on purpose."""


class ConfigError(AlphaSearchError, ValueError):
    """An invalid configuration value. `field` names it; the message says how to fix it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DataError(AlphaSearchError):
    """A corpus that cannot be loaded or is too small for the requested batches."""


class NotFoundError(AlphaSearchError, LookupError):
    """A study, batch or trial id that does not exist."""


class StateError(AlphaSearchError):
    """An action that the object's current state does not allow (e.g. cancelling a finished study)."""


class StorageError(AlphaSearchError):
    """A database problem, translated from the driver's own exception."""
