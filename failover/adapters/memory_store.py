"""In-process coordination store (``memory://``) for tests and single-process demos.

Also home of the document rules every backend shares: :func:`encode_document` checks that
a value is a strict JSON mapping (so what a caller writes is exactly what it reads back)
and :func:`decode_document` turns the stored text back into fresh objects.
"""

from __future__ import annotations

import builtins
import itertools
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from failover.ports import (
    Conflict,
    JsonDoc,
    OutcomeUnknown,
    StoreUnavailable,
    Versioned,
)

FaultKind = Literal["unavailable", "outcome_unknown_applied", "outcome_unknown_lost"]

_T = TypeVar("_T")


def _check_json(value: object, where: str, on_path: set[int]) -> None:
    """Raise ValueError (naming ``where``) unless ``value`` round-trips through JSON exactly."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, Mapping | list):
        if id(value) in on_path:
            raise ValueError(f"{where} contains itself (a circular reference)")
        on_path.add(id(value))
        if isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                if not isinstance(sub_key, str):
                    raise ValueError(f"{where} has the non-string key {sub_key!r}")
                _check_json(sub_value, f"{where}[{sub_key!r}]", on_path)
        else:
            for index, item in enumerate(value):
                _check_json(item, f"{where}[{index}]", on_path)
        on_path.discard(id(value))
        return
    hint = " (use a list)" if isinstance(value, tuple) else ""
    raise ValueError(f"{where} is a {type(value).__name__}, not a JSON type{hint}")


def encode_document(key: str, value: object) -> str:
    """The JSON text stored for ``value``; ValueError naming ``key`` if it is not a JSON mapping.

    Only types that come back unchanged are accepted (dict/Mapping with string keys, list,
    str, int, finite float, bool, None): a tuple would come back as a list, so it is refused.
    """
    if not isinstance(key, str) or not key or not key.isprintable():
        raise ValueError(f"bfm: store keys are non-empty printable strings, got {key!r}")
    if not isinstance(value, Mapping):
        raise ValueError(
            f"bfm: the document for key {key!r} must be a JSON object (a mapping), "
            f"got a {type(value).__name__}"
        )
    try:
        _check_json(value, "the document", set())
    except ValueError as exc:
        raise ValueError(f"bfm: cannot store key {key!r}: {exc}") from None
    # ASCII output: lone surrogates and odd code points survive any backend's text encoding.
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def decode_document(text: str) -> dict[str, Any]:
    """Fresh objects for stored JSON text (each call returns an independent copy)."""
    decoded: dict[str, Any] = json.loads(text)
    return decoded


@dataclass(frozen=True)
class _Entry:
    text: str
    revision: str


class MemoryStore:
    """A CoordinationStore held in this process's memory; every ``memory://`` open is fresh.

    Thread-safe: one condition guards the data and wakes ``wait_for_change`` on each write.
    Documents are stored as JSON text, so they are copied on the way in and out. Revisions
    come from a per-store counter; callers must only compare them for equality.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._entries: dict[str, _Entry] = {}
        self._revisions = itertools.count(1)
        self._fault: FaultKind | None = None
        self._closed = False

    @property
    def url(self) -> str:
        return "memory://"

    def set_fault(self, kind: FaultKind | None) -> None:
        """Test hook: make later calls fail the way a real store can (None heals it).

        ``unavailable``: every call raises StoreUnavailable and changes nothing.
        ``outcome_unknown_applied``: writes take effect, then OutcomeUnknown is raised.
        ``outcome_unknown_lost``: writes are dropped and OutcomeUnknown is raised.
        Reads are unaffected by the two ``outcome_unknown`` kinds.
        """
        if kind not in (None, "unavailable", "outcome_unknown_applied", "outcome_unknown_lost"):
            raise ValueError(f"bfm: unknown memory store fault {kind!r}")
        with self._changed:
            self._fault = kind
            self._changed.notify_all()

    def _check_reachable(self) -> None:
        if self._closed:
            raise StoreUnavailable("bfm: the memory store was closed; open a new one")
        if self._fault == "unavailable":
            raise StoreUnavailable("bfm: the memory store is unavailable (injected fault)")

    def _write(self, apply: Callable[[], _T]) -> _T:
        """Run one write under the lock, honouring the injected fault."""
        with self._changed:
            self._check_reachable()
            if self._fault == "outcome_unknown_lost":
                raise OutcomeUnknown("bfm: memory store write lost (injected fault)")
            try:
                result = apply()
            except Conflict:
                if self._fault == "outcome_unknown_applied":
                    raise OutcomeUnknown("bfm: memory store reply lost (injected fault)") from None
                raise
            self._changed.notify_all()
            if self._fault == "outcome_unknown_applied":
                raise OutcomeUnknown("bfm: memory store reply lost (injected fault)")
            return result

    def _versioned(self, key: str, entry: _Entry) -> Versioned:
        return Versioned(key=key, value=decode_document(entry.text), revision=entry.revision)

    def _listing(self, prefix: str) -> list[Versioned]:
        return [
            self._versioned(key, self._entries[key])
            for key in sorted(k for k in self._entries if k.startswith(prefix))
        ]

    def _revisions_under(self, prefix: str) -> dict[str, str]:
        return {k: e.revision for k, e in self._entries.items() if k.startswith(prefix)}

    def get(self, key: str) -> Versioned | None:
        with self._changed:
            self._check_reachable()
            entry = self._entries.get(key)
            return None if entry is None else self._versioned(key, entry)

    def list(self, prefix: str) -> list[Versioned]:
        with self._changed:
            self._check_reachable()
            return self._listing(prefix)

    def create(self, key: str, value: JsonDoc) -> str:
        text = encode_document(key, value)

        def apply() -> str:
            if key in self._entries:
                raise Conflict(f"bfm: key {key!r} already exists")
            revision = str(next(self._revisions))
            self._entries[key] = _Entry(text, revision)
            return revision

        return self._write(apply)

    def compare_and_set(self, key: str, value: JsonDoc, *, expected_revision: str) -> str:
        text = encode_document(key, value)

        def apply() -> str:
            entry = self._entries.get(key)
            if entry is None:
                raise Conflict(f"bfm: key {key!r} does not exist")
            if entry.revision != expected_revision:
                raise Conflict(f"bfm: key {key!r} changed since revision {expected_revision!r}")
            revision = str(next(self._revisions))
            self._entries[key] = _Entry(text, revision)
            return revision

        return self._write(apply)

    def delete(self, key: str, *, expected_revision: str) -> None:
        def apply() -> None:
            entry = self._entries.get(key)
            if entry is None:
                raise Conflict(f"bfm: key {key!r} does not exist")
            if entry.revision != expected_revision:
                raise Conflict(f"bfm: key {key!r} changed since revision {expected_revision!r}")
            del self._entries[key]

        self._write(apply)

    def wait_for_change(
        self, prefix: str, known: Mapping[str, str], *, timeout_s: float
    ) -> builtins.list[Versioned]:  # plain ``list`` here would name the method above
        # Entries of ``known`` outside ``prefix`` are ignored rather than counted as deleted.
        expected = {k: r for k, r in known.items() if k.startswith(prefix)}
        deadline_s = time.monotonic() + max(timeout_s, 0.0)
        with self._changed:
            while True:
                self._check_reachable()
                remaining_s = deadline_s - time.monotonic()
                if self._revisions_under(prefix) != expected or remaining_s <= 0:
                    return self._listing(prefix)
                self._changed.wait(remaining_s)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
