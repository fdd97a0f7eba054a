"""Tokens of the supported LogQL subset: durations, the tokenizer, the parser's token cursor
and the keywords outside the subset.

Strings are Go-style: "double quoted" with backslash escapes, or `backtick raw`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bfm_observe.logstore.logql_ast import SUPPORTED, LogQLError

__all__ = [
    "BYTES",
    "NUMBER",
    "UNSUPPORTED_RANGE",
    "UNSUPPORTED_STAGES",
    "UNSUPPORTED_VECTOR",
    "Tok",
    "TokenCursor",
    "lex",
    "parse_duration",
]

# --- durations -------------------------------------------------------------------------

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
    "d": 86400 * 1_000_000_000,
    "w": 7 * 86400 * 1_000_000_000,
    "y": 365 * 86400 * 1_000_000_000,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w|y)")
BYTES = re.compile(r"\d+(?:\.\d+)?(?:[KMGTPE]i?)?B", re.IGNORECASE)
NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def parse_duration(text: str) -> int | None:
    """Go/Prometheus duration (``30s``, ``5m``, ``1h30m``, ``1.5h``, ``1d``) in ns, or None."""
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    return int(total) if text else None


# --- lexer -----------------------------------------------------------------------------

_OPS = (
    "|=", "|~", "|>", "!=", "!~", "!>", "=~", "==", ">=", "<=",
    "{", "}", "(", ")", "[", "]", ",", "=", ">", "<", "|",
    "+", "-", "*", "/", "%", "^", "@", "!", ":",
)  # fmt: skip
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]*")
_NUMLIKE = re.compile(r"[0-9][0-9A-Za-zµ_.]*")
_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}


@dataclass(frozen=True)
class Tok:
    kind: Literal["op", "ident", "num", "str", "eof"]
    text: str
    pos: int
    value: str = ""

    def describe(self) -> str:
        return "end of query" if self.kind == "eof" else f"`{self.text}`"


def _unquote(query: str, start: int) -> tuple[str, int]:
    """Go double-quoted string starting at ``query[start] == '"'``; returns value, end."""
    out = bytearray()
    i = start + 1
    while i < len(query):
        c = query[i]
        if c == '"':
            try:
                return out.decode("utf-8"), i + 1
            except UnicodeDecodeError:
                raise LogQLError(f"invalid UTF-8 in string at {start}", start) from None
        if c == "\n":
            break
        if c != "\\":
            out += c.encode("utf-8", "surrogatepass")
            i += 1
            continue
        esc = query[i + 1 : i + 2]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
            continue
        spec = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}.get(esc)
        if spec is None and esc in "01234567" and esc:
            spec = (3, 8)
            digits = query[i + 1 : i + 4]
            end = i + 4
        elif spec is not None:
            digits = query[i + 2 : i + 2 + spec[0]]
            end = i + 2 + spec[0]
        allowed = "01234567" if spec is not None and spec[1] == 8 else "0123456789abcdefABCDEF"
        if spec is None or len(digits) != spec[0] or not all(ch in allowed for ch in digits):
            raise LogQLError(f"invalid escape `\\{esc}` in string at {i}", i)
        code = int(digits, spec[1])
        if esc in "uU":
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise LogQLError(f"invalid escape `\\{esc}{digits}` in string at {i}", i)
            out += chr(code).encode("utf-8")
        elif code > 255:
            raise LogQLError(f"invalid escape `\\{digits}` in string at {i}", i)
        else:
            out.append(code)
        i = end
    raise LogQLError(f"unterminated string starting at {start}", start)


def lex(query: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
            continue
        if c == "#":
            raise LogQLError(f"unsupported: comment `#` at {i} (supported: {SUPPORTED})", i)
        if c == '"':
            value, end = _unquote(query, i)
            toks.append(Tok("str", query[i:end], i, value))
            i = end
            continue
        if c == "`":
            end = query.find("`", i + 1)
            if end < 0:
                raise LogQLError(f"unterminated string starting at {i}", i)
            toks.append(Tok("str", query[i : end + 1], i, query[i + 1 : end]))
            i = end + 1
            continue
        m = _IDENT.match(query, i) or _NUMLIKE.match(query, i)
        if m is not None:
            kind: Literal["ident", "num"] = "ident" if _IDENT.match(query, i) else "num"
            toks.append(Tok(kind, m.group(), i, m.group()))
            i = m.end()
            continue
        for op in _OPS:
            if query.startswith(op, i):
                toks.append(Tok("op", op, i, op))
                i += len(op)
                break
        else:
            raise LogQLError(f"unexpected character `{c}` at {i}", i)
    toks.append(Tok("eof", "", n))
    return toks


# --- token cursor ----------------------------------------------------------------------

_MAX_DEPTH = 64
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TokenCursor:
    """The parser's position in the token list, with the helpers every rule uses."""

    def __init__(self, query: str) -> None:
        self.toks = lex(query)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def peek(self, ahead: int = 1) -> Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def next(self) -> Tok:
        tok = self.tok
        if tok.kind != "eof":
            self.i += 1
        return tok

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in ops

    def is_ident(self, *names: str) -> bool:
        return self.tok.kind == "ident" and self.tok.text in names

    def fail(self, what: str) -> LogQLError:
        tok = self.tok
        return LogQLError(f"expected {what} at {tok.pos}, found {tok.describe()}", tok.pos)

    def expect_op(self, op: str) -> Tok:
        if not self.is_op(op):
            raise self.fail(f"`{op}`")
        return self.next()

    def label_name(self) -> str:
        tok = self.tok
        if tok.kind != "ident":
            raise self.fail("a label name")
        if not _LABEL_NAME.fullmatch(tok.text):
            raise LogQLError(
                f"invalid label name `{tok.text}` at {tok.pos}: "
                "label names may only contain letters, digits and `_`",
                tok.pos,
            )
        return self.next().text

    def string(self) -> Tok:
        if self.tok.kind != "str":
            raise self.fail("a quoted string")
        return self.next()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise LogQLError(f"query nested too deeply at {self.tok.pos}", self.tok.pos)


# --- keywords outside the subset (the parser names them in its errors) ----------------

UNSUPPORTED_STAGES = {
    "logfmt", "regexp", "pattern", "unpack", "line_format", "label_format", "unwrap",
    "decolorize", "drop", "keep", "distinct",
}  # fmt: skip
UNSUPPORTED_RANGE = {
    "bytes_rate", "bytes_over_time", "avg_over_time", "sum_over_time", "min_over_time",
    "max_over_time", "stdvar_over_time", "stddev_over_time", "quantile_over_time",
    "first_over_time", "last_over_time", "absent_over_time", "rate_counter",
}  # fmt: skip
UNSUPPORTED_VECTOR = {
    "avg", "min", "max", "count", "stddev", "stdvar", "bottomk", "sort", "sort_desc",
    "approx_topk", "group",
}  # fmt: skip
