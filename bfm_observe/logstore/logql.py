"""The supported LogQL subset: parser and AST.

Semantics follow Loki's LogQL documentation
(https://grafana.com/docs/loki/latest/query/log_queries/ and
https://grafana.com/docs/loki/latest/query/metric_queries/).

Supported grammar::

    query        = log_query | metric
    log_query    = selector stage*
    selector     = "{" matcher ("," matcher)* "}"
    matcher      = label ("=" | "!=" | "=~" | "!~") string     # regexes fully anchored
    stage        = line_filter | "|" "json" | "|" label_filter
    line_filter  = ("|=" | "!=" | "|~" | "!~") string          # |~ is an unanchored search
    label_filter = or_expr;  or_expr = and_expr ("or" and_expr)*
    and_expr     = primary (("and" | "," | <space>) primary)*
    primary      = "(" or_expr ")"
                 | label ("=" | "!=" | "=~" | "!~") string     # on stream labels, structured
                 | label ("==" | "=" | "!=" | ">" | ">=" | "<" | "<=") number  # metadata, json
    metric       = range_agg | vector_agg
    range_agg    = ("count_over_time" | "rate") "(" selector [range] stage* [range] ")"
    range        = "[" duration "]"                             # 30s, 5m, 1h30m, 1d ...
    vector_agg   = "sum" [grouping] "(" metric ")" [grouping]
                 | "topk" [grouping] "(" integer "," metric ")" [grouping]
    grouping     = "by" "(" [label ("," label)*] ")"

Strings are Go-style: "double quoted" with backslash escapes, or `backtick raw`.
Anything else raises :class:`LogQLError` naming the part and its character offset.
"""

from __future__ import annotations

from collections.abc import Mapping

from bfm_observe.logstore.logql_ast import (
    SUPPORTED,
    Entry,
    JsonStage,
    LabelFilter,
    LabelFilterStage,
    LabelMatcher,
    LineFilter,
    LogQLError,
    LogQuery,
    MetricExpr,
    MetricQuery,
    NumericLabelFilter,
    OrAndLabelFilter,
    RangeAggregation,
    Stage,
    StringLabelFilter,
    VectorAggregation,
    log_query_of,
)
from bfm_observe.logstore.logql_lexer import parse_duration
from bfm_observe.logstore.logql_parser import parse

__all__ = [
    "SUPPORTED",
    "Entry",
    "JsonStage",
    "LabelFilter",
    "LabelFilterStage",
    "LabelMatcher",
    "LineFilter",
    "LogQLError",
    "LogQuery",
    "MetricExpr",
    "MetricQuery",
    "NumericLabelFilter",
    "OrAndLabelFilter",
    "RangeAggregation",
    "Stage",
    "StringLabelFilter",
    "VectorAggregation",
    "log_query_of",
    "parse",
    "parse_duration",
    "required_words",
    "select_streams",
]


def select_streams(query: LogQuery | MetricQuery, labels: Mapping[str, str]) -> bool:
    """Whether a stream with these labels is selected (for prefiltering streams)."""
    return all(m.matches(labels.get(m.name, "")) for m in log_query_of(query).selector)


def required_words(query: LogQuery | MetricQuery) -> list[str]:
    """Literal ``|=`` strings every matching line contains (for a full-text index)."""
    return [f.value for f in log_query_of(query).line_filters if f.op == "|=" and f.value]
