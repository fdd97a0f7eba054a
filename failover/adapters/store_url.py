"""Open a coordination store from its URL (``memory://``, ``sqlite:///path``, ``etcd://...``).

URL forms:

- ``memory://`` - an in-process :class:`MemoryStore`. Every call to :func:`open_store` with
  it returns a new, empty store; two opens in one process do not share data.
- ``sqlite://`` followed by a filesystem path: ``sqlite:///var/lib/bfm/bfm.db`` (three
  slashes, the third starting the absolute path ``/var/lib/bfm/bfm.db``) or
  ``sqlite://run/bfm.db`` (a path relative to the current directory, made absolute when
  opened; the store's ``url`` always shows the absolute form). The text after ``sqlite://``
  is the path verbatim: no percent-decoding and no ``?options``. Note that this is not
  SQLAlchemy's rule, where three slashes mean a relative path.
- ``etcd://host:port,host:port,...`` - an :class:`EtcdStore` on the etcd cluster whose
  client endpoints are listed (plain HTTP; every member is used, so list them all). An
  IPv6 host goes in brackets (``[::1]:2379``). An optional path is a key prefix that
  namespaces every key: ``etcd://127.0.0.1:2379/bfm/run-1/`` (a trailing ``/`` is added
  when missing). Opening checks that at least one member answers.
- ``kubernetes://namespace`` - a planned backend; it raises :class:`StoreUrlError` until
  it is built.

A malformed URL raises :class:`StoreUrlError` (a usage error); a well-formed URL whose
store cannot be reached raises :class:`failover.ports.StoreUnavailable`.
"""

from __future__ import annotations

from failover.adapters.etcd_store import CONNECT_TIMEOUT_S, EtcdStore
from failover.adapters.memory_store import MemoryStore
from failover.adapters.sqlite_store import SqliteStore
from failover.ports import CoordinationStore

ACCEPTED_FORMS = (
    "memory://, sqlite:///absolute/path/bfm.db, sqlite://relative/path/bfm.db "
    "or etcd://host:port,host:port,host:port"
)

_PLANNED = {"kubernetes": "Kubernetes"}


class StoreUrlError(ValueError):
    """The store URL is malformed, unknown, or names a backend that is not built yet."""


def open_store(url: str, *, request_timeout_s: float | None = None) -> CoordinationStore:
    """The store ``url`` names, opened and ready; see the module docstring for the forms.

    ``request_timeout_s``: how long one call may wait for a networked store's answer
    (etcd; connecting gets at most half of it), for callers that must learn sooner than
    the backend's default, such as a site agent renewing a lease within its deadline."""
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
    if scheme == "etcd":
        return _open_etcd(url, rest, request_timeout_s)
    if scheme in _PLANNED:
        raise StoreUrlError(
            f"bfm: the {_PLANNED[scheme]} store backend ({url!r}) is not built yet; "
            f"use {ACCEPTED_FORMS}"
        )
    raise StoreUrlError(f"bfm: unknown store URL {url!r}; use {ACCEPTED_FORMS}")


def _open_etcd(url: str, rest: str, request_timeout_s: float | None) -> CoordinationStore:
    hosts, slash, path = rest.partition("/")
    if "?" in rest or "#" in rest:
        raise StoreUrlError(
            f"bfm: the etcd store URL {url!r} takes no ?options or #fragment; "
            "use etcd://host:port,host:port[/key/prefix/]"
        )
    if not hosts:
        raise StoreUrlError(
            f"bfm: the etcd store URL {url!r} names no member; "
            "use etcd://host:port,host:port,host:port"
        )
    endpoints = [_parse_endpoint(url, item) for item in hosts.split(",")]
    seen = {f"{h}:{p}" for h, p in endpoints}
    if len(seen) != len(endpoints):
        raise StoreUrlError(f"bfm: the etcd store URL {url!r} names a member twice")
    prefix = path if not path or path.endswith("/") else path + "/"
    if slash and path.startswith("/"):
        raise StoreUrlError(
            f"bfm: the key prefix in the etcd store URL {url!r} must not start with '/'"
        )
    if request_timeout_s is None:
        return EtcdStore(endpoints, prefix=prefix)
    return EtcdStore(
        endpoints,
        prefix=prefix,
        request_timeout_s=request_timeout_s,
        connect_timeout_s=min(CONNECT_TIMEOUT_S, request_timeout_s / 2),
    )


def _parse_endpoint(url: str, item: str) -> tuple[str, int]:
    usage = "each member is host:port, e.g. etcd://127.0.0.1:2379,127.0.0.1:22379"
    if not item:
        raise StoreUrlError(f"bfm: the etcd store URL {url!r} has an empty member; {usage}")
    if item.startswith("["):
        host, bracket, port_text = item[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise StoreUrlError(f"bfm: bad etcd member {item!r} in {url!r}; {usage}")
        port_text = port_text[1:]
    else:
        host, colon, port_text = item.rpartition(":")
        if not colon:
            raise StoreUrlError(f"bfm: the etcd member {item!r} in {url!r} has no port; {usage}")
    if not host or any(c.isspace() or c in "@/" for c in host):
        raise StoreUrlError(f"bfm: bad etcd member host in {item!r} of {url!r}; {usage}")
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise StoreUrlError(
            f"bfm: the etcd member {item!r} in {url!r} has no valid port (1-65535); {usage}"
        )
    return host, int(port_text)
