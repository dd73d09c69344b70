"""The store's one failure a caller handles: the database did not answer."""

from __future__ import annotations

from estkit.errors import ServiceUnavailable


class StoreUnavailable(ServiceUnavailable):
    """The database could not be read or written; the operation did not happen."""
