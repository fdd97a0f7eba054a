"""Recursive-descent parser of the supported LogQL subset (grammar in
:mod:`bfm_observe.logstore.logql`).

Anything outside the subset raises :class:`LogQLError` naming the part and its offset.
"""

from __future__ import annotations

from typing import Literal

from bfm_observe.logstore.logql_ast import (
    JsonStage,
    LabelFilter,
    LabelFilterStage,
    LabelMatcher,
    LineFilter,
    LineOp,
    LogQLError,
    LogQuery,
    MatchOp,
    MetricExpr,
    MetricQuery,
    NumericLabelFilter,
    NumOp,
    OrAndLabelFilter,
    RangeAggregation,
    Stage,
    StringLabelFilter,
    VectorAggregation,
    compile_regex,
    unsupported,
)
from bfm_observe.logstore.logql_lexer import (
    BYTES,
    NUMBER,
    UNSUPPORTED_RANGE,
    UNSUPPORTED_STAGES,
    UNSUPPORTED_VECTOR,
    TokenCursor,
    parse_duration,
)

__all__ = ["parse"]

# --- parser ----------------------------------------------------------------------------


class _Parser(TokenCursor):
    """The grammar in :mod:`bfm_observe.logstore.logql`, one method per rule."""

    # query ------------------------------------------------------------------------------

    def query(self) -> LogQuery | MetricQuery:
        result: LogQuery | MetricQuery
        if self.is_op("{"):
            result = self.log_query()
        elif self.tok.kind == "ident":
            result = MetricQuery(self.metric())
        else:
            raise self.fail("a stream selector `{` or a metric query")
        tok = self.tok
        if (tok.kind == "op" and tok.text in "+-*/%^") or self.is_ident("and", "or", "unless"):
            raise unsupported(f"binary operator {tok.describe()}", tok.pos)
        if tok.kind != "eof":
            raise LogQLError(f"unexpected {tok.describe()} at {tok.pos}", tok.pos)
        return result

    def log_query(self) -> LogQuery:
        selector = self.selector()
        return LogQuery(selector, self.pipeline())

    def selector(self) -> tuple[LabelMatcher, ...]:
        start = self.expect_op("{").pos
        matchers: list[LabelMatcher] = []
        while True:
            matchers.append(self.matcher())
            if self.is_op(","):
                self.next()
                continue
            self.expect_op("}")
            break
        if all(m.matches("") for m in matchers):
            raise LogQLError(
                f"stream selector at {start} matches every stream: queries require at least "
                'one equality or regexp matcher that does not match the empty string (app=~".*" '
                'does not, app=~".+" does)',
                start,
            )
        return tuple(matchers)

    def matcher(self) -> LabelMatcher:
        name = self.label_name()
        if not self.is_op("=", "!=", "=~", "!~"):
            raise self.fail("a matcher `=`, `!=`, `=~` or `!~`")
        op: MatchOp = self.next().text  # type: ignore[assignment]
        value = self.string()
        regex = compile_regex(value.value, value.pos, anchored=True) if op in ("=~", "!~") else None
        return LabelMatcher(name, op, value.value, regex)

    # pipeline ---------------------------------------------------------------------------

    def pipeline(self) -> tuple[Stage, ...]:
        stages: list[Stage] = []
        while True:
            tok = self.tok
            if self.is_op("|=", "!=", "|~", "!~"):
                stages.append(self.line_filter())
            elif self.is_op("|>", "!>"):
                raise unsupported(f"pattern line filter `{tok.text}`", tok.pos)
            elif self.is_op("|"):
                self.next()
                stages.append(self.pipe_stage(tok.pos))
            else:
                return tuple(stages)

    def line_filter(self) -> LineFilter:
        op: LineOp = self.next().text  # type: ignore[assignment]
        if self.is_ident("ip"):
            raise unsupported("`ip(...)` line filter", self.tok.pos)
        value = self.string()
        if self.is_ident("or"):
            raise unsupported("`or` in a line filter", self.tok.pos)
        if op in ("|~", "!~"):
            return LineFilter(
                op, value.value, compile_regex(value.value, value.pos, anchored=False)
            )
        return LineFilter(op, value.value)

    def pipe_stage(self, pipe_pos: int) -> Stage:
        tok = self.tok
        if tok.kind == "ident" and tok.text in UNSUPPORTED_STAGES:
            raise unsupported(f"`| {tok.text}`", pipe_pos)
        if self.is_ident("json") and not self.peek().text.startswith(("=", "!", ">", "<")):
            self.next()
            if self.tok.kind in ("ident", "str"):
                raise unsupported("`| json` with parameters", pipe_pos)
            return JsonStage()
        if tok.kind == "ident" or self.is_op("("):
            return LabelFilterStage(self.or_filter())
        raise self.fail("a parser or label filter after `|`")

    def or_filter(self) -> LabelFilter:
        left = self.and_filter()
        while self.is_ident("or"):
            self.next()
            left = OrAndLabelFilter("or", left, self.and_filter())
        return left

    def and_filter(self) -> LabelFilter:
        left = self.primary_filter()
        while True:
            if self.is_ident("and") or self.is_op(","):
                self.next()
            elif not (self.is_op("(") or (self.tok.kind == "ident" and not self.is_ident("or"))):
                return left
            left = OrAndLabelFilter("and", left, self.primary_filter())

    def primary_filter(self) -> LabelFilter:
        self.enter()
        try:
            if self.is_op("("):
                self.next()
                inner = self.or_filter()
                self.expect_op(")")
                return inner
            if self.is_ident("ip") and self.peek().text == "(":
                raise unsupported("`ip(...)` label filter", self.tok.pos)
            name = self.label_name()
            if not self.is_op("=", "!=", "=~", "!~", "==", ">", ">=", "<", "<="):
                raise self.fail("a label filter operator (=, !=, =~, !~, ==, >, >=, <, <=)")
            op = self.next().text
            if self.tok.kind == "str" and op in ("=", "!=", "=~", "!~"):
                value = self.next()
                regex = None
                if op in ("=~", "!~"):
                    regex = compile_regex(value.value, value.pos, anchored=True)
                return StringLabelFilter(LabelMatcher(name, op, value.value, regex))  # type: ignore[arg-type]
            if op in ("=~", "!~"):
                raise self.fail("a quoted string")
            number = self.number()
            num_op: NumOp = "==" if op == "=" else op  # type: ignore[assignment]
            return NumericLabelFilter(name, num_op, number)
        finally:
            self.depth -= 1

    def number(self) -> float:
        negative = self.is_op("-")
        if negative:
            self.next()
        tok = self.tok
        if tok.kind != "num":
            raise self.fail("a number or a quoted string")
        self.next()
        if NUMBER.fullmatch(tok.text):
            value = float(tok.text)
            return -value if negative else value
        if parse_duration(tok.text) is not None:
            raise unsupported(f"duration comparison `{tok.text}`", tok.pos)
        if BYTES.fullmatch(tok.text):
            raise unsupported(f"bytes comparison `{tok.text}`", tok.pos)
        raise LogQLError(f"malformed number `{tok.text}` at {tok.pos}", tok.pos)

    # metric queries ---------------------------------------------------------------------

    def metric(self) -> MetricExpr:
        self.enter()
        try:
            tok = self.tok
            if tok.kind != "ident":
                raise self.fail("a metric query (count_over_time, rate, sum or topk)")
            if tok.text in ("count_over_time", "rate"):
                return self.range_agg()
            if tok.text in ("sum", "topk"):
                return self.vector_agg()
            if tok.text in UNSUPPORTED_RANGE:
                raise unsupported(f"range aggregation `{tok.text}`", tok.pos)
            if tok.text in UNSUPPORTED_VECTOR:
                raise unsupported(f"aggregation `{tok.text}`", tok.pos)
            if self.peek().text == "(":
                raise unsupported(f"function `{tok.text}`", tok.pos)
            raise self.fail("a metric query (count_over_time, rate, sum or topk)")
        finally:
            self.depth -= 1

    def range(self) -> int:
        self.expect_op("[")
        tok = self.tok
        if tok.kind != "num":
            raise self.fail("a duration such as 5m")
        ns = parse_duration(tok.text)
        if ns is None or ns <= 0:
            raise LogQLError(f"invalid duration `{tok.text}` at {tok.pos}", tok.pos)
        self.next()
        if self.is_op(":"):
            raise unsupported("subquery", self.tok.pos)
        self.expect_op("]")
        if self.is_ident("offset"):
            raise unsupported("`offset`", self.tok.pos)
        if self.is_op("@"):
            raise unsupported("`@` modifier", self.tok.pos)
        return ns

    def range_agg(self) -> RangeAggregation:
        name = self.next()
        func: Literal["count_over_time", "rate"] = name.text  # type: ignore[assignment]
        self.expect_op("(")
        if not self.is_op("{"):
            raise self.fail(f"a log query inside `{func}`")
        selector = self.selector()
        range_ns = self.range() if self.is_op("[") else None
        stages = self.pipeline()
        if range_ns is None:
            if not self.is_op("["):
                raise self.fail("a range such as `[5m]`")
            range_ns = self.range()
        elif self.is_op("["):
            raise LogQLError(f"a second range at {self.tok.pos}", self.tok.pos)
        self.expect_op(")")
        if self.is_ident("by", "without"):
            raise unsupported(f"grouping `{self.tok.text}` on `{func}`", self.tok.pos)
        return RangeAggregation(func, LogQuery(selector, stages), range_ns)

    def grouping(self) -> tuple[str, ...] | None:
        if self.is_ident("without"):
            raise unsupported("`without` grouping", self.tok.pos)
        if not self.is_ident("by"):
            return None
        self.next()
        self.expect_op("(")
        names: list[str] = []
        while not self.is_op(")"):
            names.append(self.label_name())
            if not self.is_op(","):
                break
            self.next()
        self.expect_op(")")
        return tuple(names)

    def vector_agg(self) -> VectorAggregation:
        name = self.next()
        op: Literal["sum", "topk"] = name.text  # type: ignore[assignment]
        by = self.grouping()
        self.expect_op("(")
        k = 0
        if op == "topk":
            tok = self.tok
            if tok.kind != "num" or not tok.text.isdigit() or int(tok.text) < 1:
                raise self.fail("a positive integer k for `topk`")
            k = int(self.next().text)
            self.expect_op(",")
        if self.is_op("{"):
            raise self.fail(f"a metric query inside `{op}` (a log query is not a vector)")
        inner = self.metric()
        self.expect_op(")")
        after = self.grouping()
        if after is not None:
            if by is not None:
                pos = self.toks[self.i - 1].pos
                raise LogQLError(f"a second grouping at {pos}", pos)
            by = after
        return VectorAggregation(op, by or (), inner, k)


def parse(query: str) -> LogQuery | MetricQuery:
    """Parse a LogQL query of the supported subset; raises :class:`LogQLError` otherwise."""
    return _Parser(query).query()
