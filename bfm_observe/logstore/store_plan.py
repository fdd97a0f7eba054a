"""How the log store plans a query: the streams it reads and what the indexes can use.

A plan holds the streams the selector picks (evaluated once per stream), the ``trace_id``
a top-level ``| trace_id="..."`` requires before any ``| json`` (for the
``(trace_id, ts_ns)`` index), an FTS5 query of the trigrams of every ``|=`` string of 3 or
more characters, and the line filters that can also be checked in SQL. Which access path
a search takes from it is :func:`~bfm_observe.logstore.store_query.select`'s choice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from bfm_observe.logstore.logql import (
    JsonStage,
    LabelFilter,
    LabelFilterStage,
    LogQuery,
    OrAndLabelFilter,
    StringLabelFilter,
    required_words,
    select_streams,
)
from bfm_observe.logstore.store_lines import encodable, trace_key

FTS_MAX_TRIGRAMS = 16
"""Trigrams per ``|=`` string in the FTS query (any subset is a correct prefilter)."""


@dataclass(frozen=True)
class Plan:
    """Which streams a query reads and how its lines are found."""

    query: LogQuery
    streams: Mapping[int, Mapping[str, str]]
    tenant_streams: int
    filter_streams: bool  # False when every stream in the store is selected
    trace: bytes | str | None
    fts_match: str | None
    contains: tuple[str, ...]
    excludes: tuple[str, ...]
    searches: tuple[str, ...]  # |~ patterns
    refuses: tuple[str, ...]  # !~ patterns

    @property
    def line_tests(self) -> bool:
        return bool(self.contains or self.excludes or self.searches or self.refuses)


def _conjuncts(expr: LabelFilter) -> Iterator[LabelFilter]:
    if isinstance(expr, OrAndLabelFilter) and expr.op == "and":
        yield from _conjuncts(expr.left)
        yield from _conjuncts(expr.right)
    else:
        yield expr


def trace_filter(query: LogQuery) -> str | None:
    """The ``trace_id`` every match carries as structured metadata, if the pipeline
    requires one before any ``| json`` (which could overwrite the label)."""
    for stage in query.stages:
        if isinstance(stage, JsonStage):
            return None
        if isinstance(stage, LabelFilterStage):
            for part in _conjuncts(stage.expr):
                if (
                    isinstance(part, StringLabelFilter)
                    and part.matcher.name == "trace_id"
                    and part.matcher.op == "="
                    and part.matcher.value
                    and encodable(part.matcher.value)
                ):
                    return part.matcher.value
    return None


def fts_match(words: Sequence[str]) -> str | None:
    """An FTS5 query every line containing all ``words`` matches, or None."""
    grams: dict[str, None] = {}
    for word in words:
        if len(word) < 3 or "\x00" in word or not encodable(word):
            continue
        mine = list(dict.fromkeys(word[i : i + 3] for i in range(len(word) - 2)))
        if len(mine) > FTS_MAX_TRIGRAMS:
            step = (len(mine) - 1) / (FTS_MAX_TRIGRAMS - 1)
            mine = [mine[round(i * step)] for i in range(FTS_MAX_TRIGRAMS)]
        grams.update(dict.fromkeys(mine))
    if not grams:
        return None
    return " AND ".join('"' + gram.replace('"', '""') + '"' for gram in grams)


def make_plan(
    query: LogQuery, tenant_streams: Sequence[tuple[int, Mapping[str, str]]], total_streams: int
) -> Plan:
    streams = {sid: labels for sid, labels in tenant_streams if select_streams(query, labels)}
    trace = trace_filter(query)
    if trace is not None and any("trace_id" in labels for labels in streams.values()):
        trace = None  # the filter reads that stream label, not the metadata
    pushed = [f for f in query.line_filters if "\x00" not in f.value and encodable(f.value)]
    return Plan(
        query=query,
        streams=streams,
        tenant_streams=len(tenant_streams),
        filter_streams=len(streams) < total_streams,
        trace=None if trace is None else trace_key(trace),
        fts_match=fts_match(required_words(query)),
        contains=tuple(f.value for f in pushed if f.op == "|="),
        excludes=tuple(f.value for f in pushed if f.op == "!="),
        searches=tuple(f.value for f in pushed if f.op == "|~"),
        refuses=tuple(f.value for f in pushed if f.op == "!~"),
    )
