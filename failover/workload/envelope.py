"""The backbone message envelope, version 1 (ARCHITECTURE.md section 7), and its routing.

One JSON object per message::

    {"schema": "bfm.envelope/1", "id": "...", "kind": "alarm", "shard_key": "camera-17",
     "shard": 5, "epoch": 12, "traceparent": "00-<32 hex>-<16 hex>-01", "tracestate": "",
     "sent_at": 1700000000.123, "payload": {...}}

``kind`` decides the module (alarm -> eap, event -> eep, auth -> aam, media -> msm,
geo -> gsm, status -> backbone); ``shard`` is a stable hash of ``shard_key`` (the same in
every process and release); ``epoch`` is stamped by the module that admits the message,
from its site's grant (0 until then; routers route, modules check). Anything malformed
is refused with a ValueError that names the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "bfm.envelope/1"
MAX_ENVELOPE_BYTES = 64 * 1024
MODULE_OF_KIND: Mapping[str, str] = {
    "alarm": "eap",
    "event": "eep",
    "auth": "aam",
    "media": "msm",
    "geo": "gsm",
    "status": "backbone",
}
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def shard_of(shard_key: str, shard_count: int) -> int:
    """The shard of a key: stable across processes, hosts and Python versions."""
    digest = hashlib.blake2b(shard_key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard_count


@dataclass(frozen=True)
class Envelope:
    id: str
    kind: str
    shard_key: str
    shard: int
    sent_at: float
    payload: Mapping[str, Any] = field(default_factory=dict)
    epoch: int = 0
    traceparent: str = ""
    tracestate: str = ""
    schema: str = SCHEMA

    @property
    def component(self) -> str:
        return MODULE_OF_KIND[self.kind]

    def stamped(self, epoch: int) -> Envelope:
        """The same message under the epoch of the router that admitted it."""
        return Envelope(**{**asdict(self), "epoch": epoch})

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False)

    @staticmethod
    def from_json(text: str | bytes) -> Envelope:
        if len(text) > MAX_ENVELOPE_BYTES:
            raise ValueError(f"envelope of {len(text)} bytes exceeds {MAX_ENVELOPE_BYTES}")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"envelope is not JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError("envelope must be a JSON object")
        return Envelope.from_dict(data)

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Envelope:
        schema = data.get("schema")
        if schema != SCHEMA:
            raise ValueError(f"envelope schema must be {SCHEMA!r}, got {schema!r}")
        unknown = set(data) - {f for f in Envelope.__dataclass_fields__}
        if unknown:
            raise ValueError(f"envelope has unknown fields {sorted(unknown)}")
        env = Envelope(
            id=_text(data, "id", required=True),
            kind=_text(data, "kind", required=True),
            shard_key=_text(data, "shard_key", required=True),
            shard=_count(data, "shard"),
            sent_at=_seconds(data, "sent_at"),
            payload=_payload(data),
            epoch=_count(data, "epoch", default=0),
            traceparent=_text(data, "traceparent"),
            tracestate=_text(data, "tracestate"),
        )
        if env.kind not in MODULE_OF_KIND:
            raise ValueError(
                f"envelope kind {env.kind!r} is not one of {', '.join(MODULE_OF_KIND)}"
            )
        if env.traceparent and not _TRACEPARENT.match(env.traceparent):
            raise ValueError(f"envelope traceparent {env.traceparent!r} is not W3C trace context")
        return env


def _text(data: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = data.get(name, None if required else "")
    if not isinstance(value, str) or (required and not value) or len(value) > 1024:
        raise ValueError(
            f"envelope field {name!r} must be a {'non-empty ' if required else ''}string"
        )
    return value


def _count(data: Mapping[str, Any], name: str, default: int | None = None) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"envelope field {name!r} must be an integer >= 0, got {value!r}")
    return value


def _seconds(data: Mapping[str, Any], name: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"envelope field {name!r} must be a time in seconds, got {value!r}")
    return float(value)


def _payload(data: Mapping[str, Any]) -> Mapping[str, Any]:
    value = data.get("payload", {})
    if not isinstance(value, dict):
        raise ValueError("envelope field 'payload' must be an object")
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, TypeError) as err:
        raise ValueError(f"envelope field 'payload' must be plain JSON ({err})") from None
    return value
