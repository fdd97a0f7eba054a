"""Loki's push wire formats: JSON and snappy-compressed protobuf, decoded into LogRecords.

Semantics follow Loki's own push path (grafana/loki ``pkg/loghttp/push/push.go``,
``pkg/loghttp/entry.go``, ``pkg/push/push.proto``; API reference:
https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs):

* stream labels are parsed as Loki does (``syntax.ParseLabels``): names match
  ``[a-zA-Z_][a-zA-Z0-9_]*``, a label with an empty value is the same as no label (it is
  dropped), a name may not repeat, and at least one label must remain;
* timestamps are integer nanoseconds since the epoch that fit an int64 (strings in JSON,
  ``google.protobuf.Timestamp`` in protobuf);
* structured metadata is a flat string-to-string map per entry.

Everything malformed raises ``PushError`` naming the stream and value index; nothing else
escapes these functions. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Mapping, Sequence

import cramjam

from bfm_observe.logstore.protowire import (
    bytes_field,
    fields,
    is_bytes,
    is_int,
    signed,
    varint,
    varint_field,
)
from bfm_observe.logstore.records import LogRecord
from bfm_observe.logstore.wire_errors import PushError

__all__ = [
    "MAX_BODY_BYTES",
    "PushError",
    "decode_loki_json",
    "decode_loki_protobuf",
    "decompress",
    "encode_loki_protobuf",
    "format_label_set",
    "parse_label_set",
]

MAX_BODY_BYTES = 100 * 1024 * 1024
"""Largest decompressed push body accepted (a guard against compression bombs)."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_DECIMAL = re.compile(r"[+-]?[0-9]+")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NAME, _DQ, _SQ, _BQ, _PUNCT = range(1, 6)  # token kinds: the group that matched
_TOKEN = re.compile(
    r"""\s*(?:([a-zA-Z_:][a-zA-Z0-9_:]*)|"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|`([^`]*)`|(\S))""",
    re.S,
)
_ESCAPE = re.compile(
    r"\\(?:x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([abfnrtv\\'\"`]))"
    r"|\\.?",
    re.S,
)
_SIMPLE_ESCAPES = dict(zip("abfnrtv\\'\"`", "\a\b\f\n\r\t\v\\'\"`", strict=True))
_JSON_SHAPE = 'Loki expects {"streams": [{"stream": {...}, "values": [["<unix ns>", "line"]]}]}'


def decompress(
    body: bytes, content_encoding: str | None, *, max_bytes: int = MAX_BODY_BYTES
) -> bytes:
    """Undo ``Content-Encoding`` as Loki's push handler does: none (or ``identity``),
    ``gzip``, ``deflate`` (zlib-wrapped as HTTP says, or raw as Go's flate reader reads it)
    or ``snappy``, which returns the body unchanged, as in Loki: the protobuf body is always
    snappy-compressed and ``decode_loki_protobuf`` undoes it. Anything else is a PushError,
    and so is a body that inflates past ``max_bytes``."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity", "snappy"):
        return body
    if encoding == "gzip":
        return _inflate(body, 16 + zlib.MAX_WBITS, "gzip", max_bytes)
    if encoding == "deflate":
        try:
            return _inflate(body, zlib.MAX_WBITS, "deflate", max_bytes)
        except PushError:
            return _inflate(body, -zlib.MAX_WBITS, "deflate", max_bytes)
    raise PushError(
        f"Content-Encoding {content_encoding!r} is not supported; Loki accepts gzip, "
        "deflate, snappy or none"
    )


def _inflate(body: bytes, wbits: int, name: str, max_bytes: int) -> bytes:
    out, rest = bytearray(), body
    while rest:  # gzip bodies may hold several members, as Go's gzip.Reader allows
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(rest, max_bytes + 1 - len(out))
        except zlib.error as exc:
            raise PushError(f"body is not valid {name} data ({exc})") from None
        if len(out) > max_bytes:
            raise PushError(f"body decompresses to more than {max_bytes} bytes")
        if not inflater.eof:
            raise PushError(f"body is truncated {name} data")
        rest = inflater.unused_data if wbits > zlib.MAX_WBITS else b""
    return bytes(out)


def parse_label_set(text: str) -> dict[str, str]:
    """Parse a Prometheus label-set text such as ``{app="x", site="a"}`` (a leading metric
    name becomes ``__name__``; values may be quoted with ``"``, ``'`` or backquotes and use
    Go escapes), then validate it as Loki does. Returns the labels sorted by name."""
    where = f"label set {text!r}"
    tokens = [
        (m.lastindex or 0, m.group(m.lastindex or 0), m.start(m.lastindex or 0))
        for m in _TOKEN.finditer(text)
    ]
    count = len(tokens)
    tokens += [(0, "", len(text))] * 3  # end of text, padded so that lookahead never fails
    pairs, i = [], 0
    if tokens[0][0] == _NAME:
        pairs.append(("__name__", tokens[0][1]))
        i = 1
    if tokens[i][:2] != (_PUNCT, "{"):
        raise PushError(f"{where}: expected '{{' at offset {tokens[i][2]}")
    i += 1
    while tokens[i][:2] != (_PUNCT, "}"):
        (kind, name, at), (_, eq, _), (quote, value, _) = tokens[i : i + 3]
        if kind != _NAME or eq != "=" or quote not in (_DQ, _SQ, _BQ):
            raise PushError(f'{where}: expected name="value" at offset {at}')
        pairs.append((name, value if quote == _BQ else _unescape(value, where)))
        i += 3
        if tokens[i][:2] == (_PUNCT, ","):
            i += 1
        elif tokens[i][:2] != (_PUNCT, "}"):
            raise PushError(f"{where}: expected ',' or '}}' at offset {tokens[i][2]}")
    if i + 1 != count:
        raise PushError(f"{where}: unexpected text at offset {tokens[i + 1][2]}")
    return _valid_labels(pairs, where)


def _unescape(body: str, where: str) -> str:
    """Resolve Go escapes. Works on the UTF-8 bytes (seen as Latin-1) because ``\\xHH``
    and octal escapes are bytes in Go, which may join into one UTF-8 character."""

    def one(match: re.Match[str]) -> str:
        hex2, octal, u4, u8, simple = match.groups()
        if simple:
            return _SIMPLE_ESCAPES[simple]
        if hex2 or octal:
            code = int(hex2, 16) if hex2 else int(octal, 8)
            if code <= 0xFF:
                return chr(code)
        elif u4 or u8:
            code = int(u4 or u8, 16)
            if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                return chr(code).encode("utf-8").decode("latin-1")
        raise PushError(f"{where}: invalid escape {match.group()!r}")

    raw = _ESCAPE.sub(one, body.encode("utf-8", "surrogatepass").decode("latin-1"))
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise PushError(f"{where}: a value is not valid UTF-8") from None


def format_label_set(labels: Mapping[str, str]) -> str:
    """The Prometheus text of a label set, sorted by name: ``{app="x", site="a"}``."""
    return "{" + ", ".join(f"{k}={_quote(labels[k])}" for k in sorted(labels)) + "}"


def _quote(value: str) -> str:
    # JSON string escapes are a subset of Go's, so Loki (and parse_label_set) reads them back.
    return json.dumps(value, ensure_ascii=False)


def _valid_labels(pairs: Sequence[tuple[str, str]], where: str) -> dict[str, str]:
    names = [name for name, _ in pairs]
    for name in names:
        if not _LABEL_NAME.fullmatch(name):
            raise PushError(
                f"{where}: invalid label name {name!r}; Loki expects [a-zA-Z_][a-zA-Z0-9_]*"
            )
    if len(set(names)) != len(names):
        raise PushError(f"{where}: duplicate label name")
    labels = {name: value for name, value in sorted(pairs) if value}
    if not labels:
        raise PushError(f"{where}: at least one label with a non-empty value is required")
    return labels


def _check_ts(value: int, where: str) -> int:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise PushError(f"{where}: timestamp {value} ns does not fit an int64")
    return value


def decode_loki_json(body: bytes, tenant: str) -> list[LogRecord]:
    """Decode a ``/loki/api/v1/push`` JSON body (already decompressed). Values are
    ``["<unix ns>", "line"]`` or ``["<unix ns>", "line", {"name": "value"}]``, the third
    element being structured metadata. Invalid UTF-8 and unpaired surrogate escapes become
    U+FFFD, as Go's decoder makes them."""
    text = body.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PushError(f"body is not valid JSON ({exc}); {_JSON_SHAPE}") from None
    if not isinstance(doc, dict):
        raise PushError(f"body must be a JSON object; {_JSON_SHAPE}")
    fix = _replace_surrogates if _SURROGATE_ESCAPE.search(text) else _same
    streams = doc.get("streams")
    if not isinstance(streams, list | None):
        raise PushError(f'"streams" must be a list; {_JSON_SHAPE}')
    records: list[LogRecord] = []
    for si, stream in enumerate(streams or ()):
        where = f"streams[{si}]"
        if not isinstance(stream, dict):
            raise PushError(f"{where} must be an object; {_JSON_SHAPE}")
        raw_labels, values = stream.get("stream"), stream.get("values")
        if not isinstance(raw_labels, dict) or not all(
            isinstance(v, str) for v in raw_labels.values()
        ):
            raise PushError(
                f"{where}.stream must be an object of string label values; {_JSON_SHAPE}"
            )
        labels = _valid_labels([(fix(k), fix(v)) for k, v in raw_labels.items()], f"{where}.stream")
        if not isinstance(values, list | None):
            raise PushError(f"{where}.values must be a list; {_JSON_SHAPE}")
        for vi, value in enumerate(values or ()):
            records.append(_json_entry(value, f"{where}.values[{vi}]", tenant, labels, fix))
    return records


def _json_entry(
    value: object, where: str, tenant: str, labels: dict[str, str], fix: Callable[[str], str]
) -> LogRecord:
    shape = '["<unix ns as a string>", "<line>"] with an optional third {"name": "value"} object'
    if not isinstance(value, list) or not 2 <= len(value) <= 3:
        raise PushError(f"{where} must be {shape}")
    ts, line = value[0], value[1]
    if not isinstance(ts, str) or not _DECIMAL.fullmatch(ts):
        raise PushError(f"{where}[0] must be a string of integer nanoseconds, got {ts!r}")
    if not isinstance(line, str):
        raise PushError(f"{where}[1] (the log line) must be a string")
    meta = value[2] if len(value) == 3 and value[2] is not None else {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise PushError(f"{where}[2] (structured metadata) must be an object of string values")
    ts_ns = _check_ts(int(ts), where)
    return LogRecord(tenant, labels, ts_ns, fix(line), {fix(k): fix(v) for k, v in meta.items()})


def _same(text: str) -> str:
    return text


def _replace_surrogates(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def decode_loki_protobuf(
    body: bytes, tenant: str, *, max_bytes: int = MAX_BODY_BYTES
) -> list[LogRecord]:
    """Decode a snappy(block)-compressed ``logproto.PushRequest``: streams (field 1) of a
    label-set text (1) and entries (2), each entry a Timestamp (1), a line (2) and
    structured metadata pairs (3). Unknown fields of any wire type are skipped; a known
    field with the wrong wire type is an error. Lines and metadata values that are not
    UTF-8 get U+FFFD; labels must be UTF-8."""
    declared, _ = varint(body, 0, "snappy header")
    if declared > max_bytes:
        raise PushError(f"body decompresses to {declared} bytes, more than {max_bytes}")
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as exc:
        raise PushError(f"body is not snappy (block format) data ({exc})") from None
    records: list[LogRecord] = []
    streams = (v for f, w, v in fields(raw, "PushRequest") if f == 1 and is_bytes(v, w, "streams"))
    for si, stream in enumerate(streams):
        where = f"streams[{si}]"
        labels: dict[str, str] | None = None
        entries: list[bytes] = []
        for field, wire, value in fields(stream, where):
            if field == 1 and is_bytes(value, wire, f"{where}.labels"):
                labels = parse_label_set(_utf8(value, f"{where}.labels"))
            elif field == 2 and is_bytes(value, wire, f"{where}.entries"):
                entries.append(value)
        if labels is None:
            raise PushError(f'{where} has no labels; Loki expects a label set like {{app="x"}}')
        for ei, entry in enumerate(entries):
            records.append(_proto_entry(entry, f"{where}.entries[{ei}]", tenant, labels))
    return records


def _proto_entry(entry: bytes, where: str, tenant: str, labels: dict[str, str]) -> LogRecord:
    ts_ns, line, meta = 0, "", {}
    for field, wire, value in fields(entry, where):
        if field == 1 and is_bytes(value, wire, f"{where}.timestamp"):
            seconds = nanos = 0
            for tf, tw, tv in fields(value, f"{where}.timestamp"):
                if tf in (1, 2) and is_int(tv, tw, f"{where}.timestamp"):
                    seconds, nanos = (signed(tv), nanos) if tf == 1 else (seconds, signed(tv))
            ts_ns = _check_ts(seconds * 1_000_000_000 + nanos, where)
        elif field == 2 and is_bytes(value, wire, f"{where}.line"):
            line = value.decode("utf-8", "replace")
        elif field == 3 and is_bytes(value, wire, f"{where}.structuredMetadata"):
            pair = {1: "", 2: ""}
            for pf, pw, pv in fields(value, f"{where}.structuredMetadata"):
                if pf in pair and is_bytes(pv, pw, f"{where}.structuredMetadata"):
                    pair[pf] = pv.decode("utf-8", "replace")
            meta[pair[1]] = pair[2]
    return LogRecord(tenant, labels, ts_ns, line, meta)


def _utf8(value: bytes, where: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise PushError(f"{where} is not valid UTF-8") from None


def encode_loki_protobuf(records: Sequence[LogRecord]) -> bytes:
    """The snappy-compressed ``PushRequest`` of ``records``, one stream per distinct label
    set (streams and entries keep their order); the inverse of ``decode_loki_protobuf``."""
    streams: dict[str, list[bytes]] = {}
    label_texts: dict[tuple[tuple[str, str], ...], str] = {}
    for record in records:
        key = tuple(record.labels.items())
        labels = label_texts.get(key) or label_texts.setdefault(
            key, format_label_set(record.labels)
        )
        seconds, nanos = divmod(record.ts_ns, 1_000_000_000)
        entry = bytes_field(1, varint_field(1, seconds) + varint_field(2, nanos))
        entry += bytes_field(2, record.line.encode("utf-8"))
        for name, value in record.metadata.items():
            pair = bytes_field(1, name.encode("utf-8")) + bytes_field(2, value.encode("utf-8"))
            entry += bytes_field(3, pair)
        streams.setdefault(labels, []).append(bytes_field(2, entry))
    request = b"".join(
        bytes_field(1, bytes_field(1, labels.encode("utf-8")) + b"".join(entries))
        for labels, entries in streams.items()
    )
    return bytes(cramjam.snappy.compress_raw(request))
