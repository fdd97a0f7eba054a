"""etcd coordination store (``etcd://host:port,host:port[/prefix/]``), etcd v3 API 3.4+.

Client: the standard library's ``http.client`` against etcd's documented gRPC-gateway JSON
API (``/v3/kv/range``, ``/v3/kv/txn``), no third-party package. It was chosen over
``etcd3gw`` (one endpoint only, one ``requests`` timeout) and ``aetcd`` (asyncio, while the
runtime is threaded) because the three error kinds hinge on knowing exactly whether a write
had been sent when something failed, which a connect step and a response step that we
time and catch separately tell us directly.

Mapping of the contract (ARCHITECTURE.md section 7):

- One key holds one JSON document (base64 in the API, as etcd's JSON gateway requires).
  The revision is the key's ``mod_revision`` as a decimal string: etcd's global revision
  grows with every write, so it never repeats, even for a key deleted and created again.
- ``create`` is a transaction comparing ``create_revision == 0``; ``compare_and_set`` and
  ``delete`` compare ``mod_revision``; ``list`` is one range over the prefix (etcd sorts
  by key bytes, which for UTF-8 is the order of the code points, as Python sorts).
- Reads are linearizable (etcd's default range, not ``serializable``): a read never
  returns data older than a write that finished before it began.
- ``wait_for_change`` polls every ``poll_interval_s`` (a linearizable range each time).
- ``prefix`` (optional, ending in ``/``) puts every key under a namespace, so several runs
  or tests can share one cluster; the URL carries it (``etcd://h:p,h:p/bfm/run-1/``).

Every member is used, not one endpoint: requests go to the member that answered last and
move on to the next member when one fails. Each request has ``connect_timeout_s`` to
connect and ``request_timeout_s`` to be answered (each socket operation; a fresh connection
per request, so a reused connection that the server had closed can never be mistaken for
an unknown outcome). The errors:

- ``StoreUnavailable``: nothing was written. Reads: no member answered (connection refused,
  timeout, HTTP 503, e.g. a member cut off from the quorum), each member tried once.
  Writes: no member accepted the connection (or every member refused the request before
  proposing it: ``no leader``, ``too many requests``).
- ``Conflict``: the transaction's compare failed (the key existed / changed / is gone).
- ``OutcomeUnknown``: a write was sent and no clear answer came back (a timeout, the
  connection dropped, etcd's ``request timed out`` 503). It is never retried on another
  member, since the first may have applied it; the caller reads the key again.

Timing: etcd's own request timeout is 5 s + 2 x the election timeout (7 s with the
cluster timing in :mod:`failover.adapters.etcd_cluster`; see ``docs/etcd.md``).
``request_timeout_s`` defaults to 3 s so a caller learns sooner (site agents pass half
their renew deadline); a read may take up to that once per member before
``StoreUnavailable``.
"""

from __future__ import annotations

import base64
import builtins
import http.client
import json
import ssl
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from failover.adapters.memory_store import decode_document, encode_document
from failover.adapters.polling import poll_for_change
from failover.ports import (
    Conflict,
    JsonDoc,
    OutcomeUnknown,
    StoreUnavailable,
    Versioned,
)

REQUEST_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 0.5
POLL_INTERVAL_S = 0.1

# etcd error messages that mean the member refused a write before proposing it to raft.
_NOT_PROPOSED = ("etcdserver: no leader", "etcdserver: too many requests")
_GRPC_INVALID_ARGUMENT = 3


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _key_bytes(key: str) -> bytes:
    # surrogatepass: a key that create() refuses can still be looked up (it is never there).
    return key.encode("utf-8", "surrogatepass")


def _prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix`` (etcd's rule)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\x00"  # with key "\0": every key
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _revision_number(revision: str) -> int | None:
    """The mod_revision a revision string names, or None when it cannot be one."""
    if not revision.isascii() or not revision.isdigit():
        return None
    number = int(revision)
    return number if number > 0 and str(number) == revision else None


class _Sent(Exception):
    """A write reached a member and then failed in a way that leaves its outcome unknown."""


class _Failed(Exception):
    """One member did not answer usefully; nothing was written through it."""


class EtcdStore:
    """A CoordinationStore on an etcd cluster, reached through every member in turn.

    Thread-safe: each request opens its own connection; the only shared state is which
    member answered last (a hint) and the closed flag.
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        prefix: str = "",
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        poll_interval_s: float = POLL_INTERVAL_S,
        check_reachable: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("bfm: the etcd store needs at least one member host:port")
        for name, value in (
            ("request_timeout_s", request_timeout_s),
            ("connect_timeout_s", connect_timeout_s),
            ("poll_interval_s", poll_interval_s),
        ):
            if not value > 0:
                raise ValueError(f"bfm: {name} must be positive, got {value}")
        if prefix and (not prefix.endswith("/") or prefix.startswith("/")):
            raise ValueError(
                f"bfm: the etcd key prefix must end with '/' and not start with one, got {prefix!r}"
            )
        self._endpoints = [(host, int(port)) for host, port in endpoints]
        self._prefix = prefix
        self._request_timeout_s = request_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._poll_interval_s = poll_interval_s
        self._tls = tls  # HTTPS to every member (BFM_ETCD_CA and friends: store_url)
        self._preferred = 0
        self._closed = threading.Event()
        if check_reachable:
            self._request("/version", None, write=False, what="answer")

    @property
    def url(self) -> str:
        hosts = ",".join(_format_endpoint(host, port) for host, port in self._endpoints)
        return f"etcd://{hosts}" + (f"/{self._prefix}" if self._prefix else "")

    @property
    def prefix(self) -> str:
        """The namespace every key lives under ("" for none)."""
        return self._prefix

    # -- transport ---------------------------------------------------------------------------

    def _request(
        self, path: str, body: Mapping[str, Any] | None, *, write: bool, what: str
    ) -> dict[str, Any]:
        """POST ``body`` (GET when None) to the members in turn; see the module docstring."""
        if self._closed.is_set():
            raise StoreUnavailable(f"bfm: the etcd store {self.url} was closed; open it again")
        payload = None if body is None else json.dumps(body).encode("ascii")
        count = len(self._endpoints)
        start = self._preferred
        reasons: list[str] = []
        for step in range(count):
            index = (start + step) % count
            host, port = self._endpoints[index]
            try:
                answer = self._one(host, port, path, payload, write=write)
            except _Failed as exc:
                reasons.append(f"{_format_endpoint(host, port)}: {exc}")
                continue
            except _Sent as exc:
                self._preferred = (index + 1) % count  # the next call tries another member
                raise OutcomeUnknown(
                    f"bfm: the etcd member {_format_endpoint(host, port)} of {self.url} took "
                    f"the write but gave no clear answer ({exc}); it may or may not have been "
                    "applied, read the key again"
                ) from None
            self._preferred = index
            return answer
        raise StoreUnavailable(
            f"bfm: no member of the etcd store {self.url} could {what} "
            f"({'; '.join(reasons)}); is etcd running there with a quorum?"
        )

    def _one(
        self, host: str, port: int, path: str, payload: bytes | None, *, write: bool
    ) -> dict[str, Any]:
        conn = (
            http.client.HTTPSConnection(
                host, port, timeout=self._connect_timeout_s, context=self._tls
            )
            if self._tls is not None
            else http.client.HTTPConnection(host, port, timeout=self._connect_timeout_s)
        )
        try:
            try:
                conn.connect()
            except TimeoutError:
                raise _Failed(f"no connection within {self._connect_timeout_s} s") from None
            except OSError as exc:
                raise _Failed(exc.strerror or type(exc).__name__) from None
            assert conn.sock is not None
            conn.sock.settimeout(self._request_timeout_s)
            headers = {"Content-Type": "application/json"}
            try:
                if payload is None:
                    conn.request("GET", path, headers=headers)
                else:
                    conn.request("POST", path, body=payload, headers=headers)
            except OSError as exc:  # not all of it went out: etcd never acts on half a request
                raise _Failed(f"sending failed: {exc}") from None
            # From here on a write has been sent.
            failure = _Sent if write else _Failed
            try:
                response = conn.getresponse()
                raw = response.read()
            except TimeoutError:
                raise failure(f"no answer within {self._request_timeout_s} s") from None
            except (OSError, http.client.HTTPException) as exc:
                raise failure(f"connection lost: {exc or type(exc).__name__}") from None
        finally:
            conn.close()
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"error": raw[:200].decode("utf-8", "replace")}
        if not isinstance(decoded, dict):
            decoded = {"error": repr(decoded)[:200]}
        if response.status == 200:
            return decoded
        message = str(decoded.get("message") or decoded.get("error") or response.reason)
        if write and decoded.get("code") == _GRPC_INVALID_ARGUMENT:
            raise ValueError(f"bfm: the etcd store refused the write: {message}")
        if write and response.status >= 500 and not message.startswith(_NOT_PROPOSED):
            raise _Sent(f"HTTP {response.status} {message}")
        raise _Failed(f"HTTP {response.status} {message}")

    # -- helpers -----------------------------------------------------------------------------

    def _full(self, key: str) -> bytes:
        return _key_bytes(self._prefix + key)

    def _versioned(self, kv: Mapping[str, Any]) -> Versioned:
        key = _unb64(kv["key"]).decode("utf-8")[len(self._prefix) :]
        text = _unb64(kv.get("value", "")).decode("utf-8")
        return Versioned(key=key, value=decode_document(text), revision=str(kv["mod_revision"]))

    def _txn(
        self,
        key: str,
        compare: Mapping[str, Any],
        success: Mapping[str, Any],
    ) -> tuple[dict[str, Any], bool]:
        """Run one transaction; returns the answer and whether ``key`` existed on failure."""
        full = _b64(self._full(key))
        answer = self._request(
            "/v3/kv/txn",
            {
                "compare": [{"key": full, "result": "EQUAL", **compare}],
                "success": [success],
                "failure": [{"request_range": {"key": full, "keys_only": True}}],
            },
            write=True,
            what="take the write",
        )
        if answer.get("succeeded"):
            return answer, True
        responses = answer.get("responses") or [{}]
        existed = bool(responses[0].get("response_range", {}).get("kvs"))
        return answer, existed

    def _revision_of(self, answer: Mapping[str, Any]) -> str:
        return str(answer["header"]["revision"])

    # -- the port ----------------------------------------------------------------------------

    def get(self, key: str) -> Versioned | None:
        full = self._full(key)
        if not full:
            return None
        answer = self._request("/v3/kv/range", {"key": _b64(full)}, write=False, what="answer")
        kvs = answer.get("kvs") or []
        return self._versioned(kvs[0]) if kvs else None

    def list(self, prefix: str) -> builtins.list[Versioned]:
        full = self._full(prefix)
        start = full or b"\x00"
        answer = self._request(
            "/v3/kv/range",
            {"key": _b64(start), "range_end": _b64(_prefix_end(full))},
            write=False,
            what="answer",
        )
        listing = [self._versioned(kv) for kv in answer.get("kvs") or []]
        return sorted(listing, key=lambda v: v.key)

    def create(self, key: str, value: JsonDoc) -> str:
        text = encode_document(key, value)
        answer, _ = self._txn(
            key,
            {"target": "CREATE", "create_revision": "0"},
            {"request_put": {"key": _b64(self._full(key)), "value": _b64(text.encode())}},
        )
        if not answer.get("succeeded"):
            raise Conflict(f"bfm: key {key!r} already exists")
        return self._revision_of(answer)

    def compare_and_set(self, key: str, value: JsonDoc, *, expected_revision: str) -> str:
        text = encode_document(key, value)
        number = _revision_number(expected_revision)
        if number is None:
            raise Conflict(f"bfm: key {key!r} changed since revision {expected_revision!r}")
        answer, existed = self._txn(
            key,
            {"target": "MOD", "mod_revision": str(number)},
            {"request_put": {"key": _b64(self._full(key)), "value": _b64(text.encode())}},
        )
        if not answer.get("succeeded"):
            raise _conflict(key, expected_revision, existed=existed)
        return self._revision_of(answer)

    def delete(self, key: str, *, expected_revision: str) -> None:
        number = _revision_number(expected_revision)
        if number is None or not self._full(key):
            raise Conflict(f"bfm: key {key!r} changed since revision {expected_revision!r}")
        answer, existed = self._txn(
            key,
            {"target": "MOD", "mod_revision": str(number)},
            {"request_delete_range": {"key": _b64(self._full(key))}},
        )
        if not answer.get("succeeded"):
            raise _conflict(key, expected_revision, existed=existed)

    def wait_for_change(
        self, prefix: str, known: Mapping[str, str], *, timeout_s: float
    ) -> builtins.list[Versioned]:  # plain ``list`` here would name the method above
        return poll_for_change(
            self.list,
            prefix,
            known,
            timeout_s=timeout_s,
            poll_interval_s=self._poll_interval_s,
            closed=self._closed,
        )

    def close(self) -> None:
        self._closed.set()


def _conflict(key: str, expected_revision: str, *, existed: bool) -> Conflict:
    if not existed:
        return Conflict(f"bfm: key {key!r} does not exist")
    return Conflict(f"bfm: key {key!r} changed since revision {expected_revision!r}")


def _format_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
