"""AST of the supported LogQL subset (see :mod:`bfm_observe.logstore.logql`).

The error type (with its ``unsupported`` and regex-compile helpers), the log entry, the
query dataclasses and :func:`log_query_of`. No parsing here: the lexer and parser import
this module, never the other way round.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "SUPPORTED",
    "Entry",
    "JsonStage",
    "LabelFilter",
    "LabelFilterStage",
    "LabelMatcher",
    "LineFilter",
    "LineOp",
    "LogQLError",
    "LogQuery",
    "MatchOp",
    "MetricExpr",
    "MetricQuery",
    "NumOp",
    "NumericLabelFilter",
    "OrAndLabelFilter",
    "RangeAggregation",
    "Stage",
    "StringLabelFilter",
    "VectorAggregation",
    "compile_regex",
    "log_query_of",
    "unsupported",
]

SUPPORTED = (
    "stream selectors with =, !=, =~, !~; line filters |=, !=, |~, !~; | json; "
    "label filters on labels, structured metadata and json fields; "
    "count_over_time, rate, sum by (...), topk"
)


class LogQLError(ValueError):
    """A query outside the supported subset or malformed; a 400 for the HTTP layer."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


def unsupported(what: str, pos: int) -> LogQLError:
    return LogQLError(f"unsupported: {what} at {pos} (supported: {SUPPORTED})", pos)


def compile_regex(pattern: str, pos: int, *, anchored: bool) -> re.Pattern[str]:
    try:
        return re.compile(f"(?:{pattern})" if anchored else pattern)
    except (re.error, ValueError, OverflowError, RecursionError) as exc:
        raise LogQLError(f"invalid regular expression `{pattern}` at {pos}: {exc}", pos) from None


@dataclass(frozen=True)
class Entry:
    """One log line: stream labels plus the entry's structured metadata."""

    ts_ns: int
    line: str
    labels: Mapping[str, str]
    metadata: Mapping[str, str] = field(default_factory=dict)


MatchOp = Literal["=", "!=", "=~", "!~"]


@dataclass(frozen=True)
class LabelMatcher:
    """``name op "value"``; regexes are fully anchored as in Prometheus and Loki."""

    name: str
    op: MatchOp
    value: str
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, value: str) -> bool:
        """A missing label is the empty string, as in Prometheus."""
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self.regex is not None
        found = self.regex.fullmatch(value) is not None
        return found if self.op == "=~" else not found


LineOp = Literal["|=", "!=", "|~", "!~"]


@dataclass(frozen=True)
class LineFilter:
    """``|= "text"`` substring; ``|~ "re"`` unanchored regex search; ``!=``/``!~`` negate."""

    op: LineOp
    value: str
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, line: str) -> bool:
        if self.op == "|=":
            return self.value in line
        if self.op == "!=":
            return self.value not in line
        assert self.regex is not None
        found = self.regex.search(line) is not None
        return found if self.op == "|~" else not found


@dataclass(frozen=True)
class JsonStage:
    """``| json`` without parameters: every scalar field becomes a label."""


@dataclass(frozen=True)
class StringLabelFilter:
    matcher: LabelMatcher


NumOp = Literal["==", "!=", ">", ">=", "<", "<="]


@dataclass(frozen=True)
class NumericLabelFilter:
    name: str
    op: NumOp
    value: float


@dataclass(frozen=True)
class OrAndLabelFilter:
    op: Literal["and", "or"]
    left: LabelFilter
    right: LabelFilter


LabelFilter = StringLabelFilter | NumericLabelFilter | OrAndLabelFilter


@dataclass(frozen=True)
class LabelFilterStage:
    expr: LabelFilter


Stage = LineFilter | JsonStage | LabelFilterStage


@dataclass(frozen=True)
class LogQuery:
    selector: tuple[LabelMatcher, ...]
    stages: tuple[Stage, ...] = ()

    @property
    def line_filters(self) -> tuple[LineFilter, ...]:
        """Line filters all apply to the original line (``| json`` never rewrites it)."""
        return tuple(s for s in self.stages if isinstance(s, LineFilter))


@dataclass(frozen=True)
class RangeAggregation:
    func: Literal["count_over_time", "rate"]
    query: LogQuery
    range_ns: int


@dataclass(frozen=True)
class VectorAggregation:
    op: Literal["sum", "topk"]
    by: tuple[str, ...]
    inner: MetricExpr
    k: int = 0


MetricExpr = RangeAggregation | VectorAggregation


@dataclass(frozen=True)
class MetricQuery:
    expr: MetricExpr

    @property
    def log_query(self) -> LogQuery:
        return log_query_of(self)


def log_query_of(query: LogQuery | MetricQuery) -> LogQuery:
    """The one log query a query reads (selector and pipeline)."""
    if isinstance(query, LogQuery):
        return query
    expr: MetricExpr = query.expr
    while isinstance(expr, VectorAggregation):
        expr = expr.inner
    return expr.query
