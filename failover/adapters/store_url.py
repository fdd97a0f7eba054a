"""Open a coordination store from its URL (``memory://``, ``sqlite:///path/to/bfm.db``).

URL forms:

- ``memory://`` - an in-process :class:`MemoryStore`. Every call to :func:`open_store` with
  it returns a new, empty store; two opens in one process do not share data.
- ``sqlite://`` followed by a filesystem path: ``sqlite:///var/lib/bfm/bfm.db`` (three
  slashes, the third starting the absolute path ``/var/lib/bfm/bfm.db``) or
  ``sqlite://run/bfm.db`` (a path relative to the current directory, made absolute when
  opened; the store's ``url`` always shows the absolute form). The text after ``sqlite://``
  is the path verbatim: no percent-decoding and no ``?options``. Note that this is not
  SQLAlchemy's rule, where three slashes mean a relative path.
- ``etcd://host:port,host:port`` and ``kubernetes://namespace`` - planned backends; they
  raise :class:`StoreUrlError` until they are built.

A malformed URL raises :class:`StoreUrlError` (a usage error); a well-formed URL whose
store cannot be reached raises :class:`failover.ports.StoreUnavailable`.
"""

from __future__ import annotations

from failover.adapters.memory_store import MemoryStore
from failover.adapters.sqlite_store import SqliteStore
from failover.ports import CoordinationStore

ACCEPTED_FORMS = "memory://, sqlite:///absolute/path/bfm.db or sqlite://relative/path/bfm.db"

_PLANNED = {"etcd": "etcd", "kubernetes": "Kubernetes"}


class StoreUrlError(ValueError):
    """The store URL is malformed, unknown, or names a backend that is not built yet."""


def open_store(url: str) -> CoordinationStore:
    """The store ``url`` names, opened and ready; see the module docstring for the forms."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise StoreUrlError(f"bfm: {url!r} is not a store URL; use {ACCEPTED_FORMS}")
    if scheme == "memory":
        if rest:
            raise StoreUrlError(
                f"bfm: the memory store URL takes no path, got {url!r}; use memory://"
            )
        return MemoryStore()
    if scheme == "sqlite":
        if not rest:
            raise StoreUrlError(
                f"bfm: the store URL {url!r} has no file path; use {ACCEPTED_FORMS}"
            )
        if rest == ":memory:":
            raise StoreUrlError(
                f"bfm: {url!r} would not be shared between processes; use memory:// instead"
            )
        return SqliteStore(rest)
    if scheme in _PLANNED:
        raise StoreUrlError(
            f"bfm: the {_PLANNED[scheme]} store backend ({url!r}) is not built yet; "
            f"use {ACCEPTED_FORMS}"
        )
    raise StoreUrlError(f"bfm: unknown store URL {url!r}; use {ACCEPTED_FORMS}")
