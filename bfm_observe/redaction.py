"""Secrets stay secret: tokens, passwords, keys and Authorization headers are replaced by
``[REDACTED]`` before a log line, a span attribute or an audit record leaves the process.

Two rules, applied everywhere:

- **by name**: a field (a log record's ``extra``, a span or event attribute, an audit
  record's key) whose name says it holds a secret (``password``, ``token``,
  ``authorization``, ``api_key``, ``license_key``, ``private_key``, ``secret``, a
  ``*_key`` of a signer, ...) loses its whole value;
- **by shape**, in any free text (a message, an exception, a value of any other field):
  ``Authorization: Bearer ...`` / ``Basic ...`` headers, ``Bearer <token>``,
  ``name=value`` / ``"name": "value"`` pairs whose name is a secret's, the password of a
  URL (``scheme://user:password@host``) and PEM private-key blocks.

A license file's *signature* and a public key are not secrets (a license is useless
without the system it names); the signing key is, by name and as PEM. Redaction is
best-effort over text: a secret with neither a telling name nor a known shape (a bare
random string in a message) cannot be recognised, which is why BFM never logs secrets
on purpose; the rules catch the accidents (a config dumped whole, a URL with its
password, a request's headers in an exception).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace.status import Status

REDACTED = "[REDACTED]"

# the names of secrets, no secret:
_SECRET_WORDS = (
    r"pass(?:word|wd|phrase)?|pwd|secret|token|auth(?:orization)?|api[-_]?key|"  # noqa: S105
    r"access[-_]?key|private[-_]?key|signing[-_]?key|license[-_]?key|credentials?|"
    r"client[-_]?secret|cookie"
)
_SECRET_NAME = re.compile(
    rf"(?:^|[._-])(?:{_SECRET_WORDS})(?:$|[._-])|^(?:{_SECRET_WORDS})$", re.IGNORECASE
)
_NOT_SECRET_NAME = re.compile(r"(?:^|[._-])(?:public[-_]?key|token[-_]?type)$", re.IGNORECASE)

_PEM_PRIVATE = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
_AUTH_HEADER = re.compile(
    r"(?P<head>\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<scheme>(?:bearer|basic|digest|token|negotiate)\s+)?(?P<value>[^\s\"',;}]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
_PAIR = re.compile(
    r"(?P<head>(?P<quote>[\"']?)(?P<name>\b[A-Za-z_][\w.-]*)(?P=quote)\s*[:=]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&{}\[\]\"']+)"
)
_AUTH_SCHEMES = {"bearer", "basic", "digest", "token", "negotiate"}
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)(?P<value>[^\s/@]+)(?=@)")


def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (its whole value is redacted)."""
    return bool(_SECRET_NAME.search(name)) and not _NOT_SECRET_NAME.search(name)


def redact_text(text: str) -> str:
    """``text`` with every secret of a known shape replaced by ``[REDACTED]``."""
    if not text:
        return text
    text = _PEM_PRIVATE.sub(REDACTED, text)
    text = _AUTH_HEADER.sub(lambda m: f"{m['head']}{m['scheme'] or ''}{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m['head']}{REDACTED}", text)
    text = _PAIR.sub(_pair, text)
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}", text)


def _pair(match: re.Match[str]) -> str:
    bare = match["value"].strip("\"'")
    scheme = bare.lower() in _AUTH_SCHEMES and match.string[match.end() :].lstrip().startswith(
        REDACTED
    )
    if not is_secret_name(match["name"]) or bare == REDACTED or scheme:
        return match.group(0)  # not a secret's name, done already, or a header's scheme
    value = match["value"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match['head']}{quote}{REDACTED}{quote}"


def redact_value(name: str, value: Any) -> Any:
    """A field's value as it may leave the process: all of it redacted for a secret's
    name; otherwise strings redacted by shape, mappings and sequences field by field."""
    if is_secret_name(name) and value not in (None, "", REDACTED):
        return REDACTED
    return redact_any(value)


def redact_any(value: Any) -> Any:
    """Strings by shape, mappings by their keys' names and values, sequences item by
    item; other values (numbers, booleans, None) unchanged."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {key: redact_value(str(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_any(item) for item in value)
    return value


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of ``values`` as ``redact_value`` leaves it."""
    return {key: redact_value(key, value) for key, value in values.items()}


def redacted_span(span: ReadableSpan) -> ReadableSpan:
    """``span`` as it may be exported: its attributes, its events' attributes and its
    status description redacted; the same object when nothing needed it."""
    attributes = _attributes(span.attributes)
    events = [
        Event(event.name, _attributes(event.attributes), event.timestamp) for event in span.events
    ]
    description = span.status.description
    status = span.status
    if description and (clean := redact_text(description)) != description:
        status = Status(span.status.status_code, clean)
    unchanged = (
        attributes == dict(span.attributes or {})
        and all(
            new.attributes == old.attributes for new, old in zip(events, span.events, strict=True)
        )
        and status is span.status
    )
    if unchanged:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _attributes(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {} if not values else redact_mapping(values)
