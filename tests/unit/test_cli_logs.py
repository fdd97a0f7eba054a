"""`bfm logs` and `bfm trace` against a double of Loki's and Tempo's HTTP APIs: what they
print, what they ask, and their exit codes."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from support.logstore_data import span_record
from support.loki_api_double import LokiApiDouble, matrix_data

from bfm_observe.logstore.records import LogRecord, SpanEvent, SpanLink, SpanRecord
from failover.cli.main import build_app, run

APP = build_app(["failover.cli.logs"])
T0_NS = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z
MS = 1_000_000
MSG = "4bf92f3577b34da6a3ce929d0e0e4736"
DECISION = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture(autouse=True)
def _no_log_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BFM_LOKI_URL", "BFM_TRACES_URL", "BFM_LOKI_TOKEN", "BFM_LOKI_TENANT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def double() -> Iterator[LokiApiDouble]:
    with LokiApiDouble() as server:
        yield server


def bfm(*args: str) -> int:
    return run(list(args), cli=APP)


def _line(
    ts_ms: int, msg: str, *, site: str, component: str, trace_id: str, level: str = "info"
) -> LogRecord:
    doc = {"ts": "t", "level": level, "logger": "bfm", "msg": msg, "site": site}
    doc |= {"component": component, "trace_id": trace_id, "span_id": "00f067aa0ba902b7"}
    labels = {"site": site, "component": component, "level": level, "namespace": "hemisphere"}
    return LogRecord("fake", labels, T0_NS + ts_ms * MS, json.dumps(doc), {"trace_id": trace_id})


def _span(
    trace_id: str,
    span_id: str,
    start_ms: int,
    end_ms: int,
    name: str,
    service: str,
    site: str,
    **more: Any,
) -> SpanRecord:
    return span_record(
        trace_id,
        span_id,
        start_ns=T0_NS + start_ms * MS,
        end_ns=T0_NS + end_ms * MS,
        name=name,
        service=service,
        site=site,
        **more,
    )


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_logs_prints_one_aligned_line_per_entry_newest_first(
    double: LokiApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    query = '{site=~".+"} |= "shard"'
    double.answer_logs(
        query,
        [
            _line(5, "took shard 3", site="b", component="eap", trace_id=MSG),
            _line(
                9, "lost shard 3", site="w", component="controller", trace_id=MSG, level="warning"
            ),
            LogRecord(
                "fake", {"site": "a", "component": "router"}, T0_NS + 7 * MS, "plain shard text"
            ),
        ],
    )
    assert bfm("logs", query, "--url", double.url) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "2024-05-01T12:00:00.009Z  w  controller  warning  lost shard 3",
        "2024-05-01T12:00:00.007Z  a  router      -        plain shard text",
        "2024-05-01T12:00:00.005Z  b  eap         info     took shard 3",
    ]
    params = double.seen[-1].params
    assert params["limit"] == ["100"] and params["direction"] == ["backward"]
    assert int(params["end"][0]) - int(params["start"][0]) == 3600 * 10**9


def test_logs_options_and_json_lines(
    double: LokiApiDouble, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    query = '{component="eap"}'
    double.answer_logs(query, [_line(5, "took shard 3", site="b", component="eap", trace_id=MSG)])
    monkeypatch.setenv("BFM_LOKI_URL", double.url)
    assert bfm("logs", query, "--since", "2h", "--limit", "5", "--forward", "--json") == 0
    (line,) = capsys.readouterr().out.splitlines()
    doc = json.loads(line)
    assert doc["ts"] == "2024-05-01T12:00:00.005Z" and doc["ts_ns"] == T0_NS + 5 * MS
    assert doc["metadata"] == {"trace_id": MSG}
    assert doc["labels"]["component"] == "eap"
    assert json.loads(doc["line"])["msg"] == "took shard 3"
    params = double.seen[-1].params
    assert (params["limit"], params["direction"]) == (["5"], ["forward"])
    assert int(params["end"][0]) - int(params["start"][0]) == 7200 * 10**9


def test_logs_prints_the_series_of_a_metric_query(
    double: LokiApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    query = 'sum by (site) (count_over_time({site=~".+"}[1m]))'
    double.answer_data(
        query, matrix_data([({"site": "a"}, [(1714564800, "3"), (1714564860, "4")])])
    )
    assert bfm("logs", query, "--url", double.url) == 0
    assert capsys.readouterr().out.splitlines() == [
        '{site="a"}',
        "  2024-05-01T12:00:00.000Z  3",
        "  2024-05-01T12:01:00.000Z  4",
    ]


def test_logs_with_nothing_found_says_so_and_exits_0(
    double: LokiApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bfm("logs", '{site="a"} |= "nope"', "--url", double.url, "--since", "90m") == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == 'bfm: no lines matched {site="a"} |= "nope" in the last 1h30m.\n'


def test_logs_errors_and_exit_codes(
    double: LokiApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    double.fail("{site=", 400, "parse error at line 1, col 7: syntax error: unexpected $end")
    assert bfm("logs", "{site=", "--url", double.url) == 2
    err = capsys.readouterr().err
    assert "the log store refused the query: parse error at line 1, col 7" in err
    assert err.count("\n") == 1 and "Traceback" not in err

    url = _closed_port_url()
    assert bfm("logs", '{site=~".+"}', "--url", url) == 3
    err = capsys.readouterr().err
    assert url in err and "connection refused" in err and "--url" in err

    assert bfm("logs", '{site=~".+"}', "--since", "soon", "--url", double.url) == 2
    assert "'soon' is not a duration" in capsys.readouterr().err


def test_logs_credentials_come_from_options_or_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with LokiApiDouble(token="t0k", tenant="ops") as double:
        assert bfm("logs", '{site="a"}', "--url", double.url) == 2
        err = capsys.readouterr().err
        assert "401" in err and "--token" in err and "--tenant" in err
        assert (
            bfm("logs", '{site="a"}', "--url", double.url, "--token", "t0k", "--tenant", "ops") == 0
        )
        monkeypatch.setenv("BFM_LOKI_TOKEN", "t0k")
        monkeypatch.setenv("BFM_LOKI_TENANT", "ops")
        assert bfm("logs", '{site="a"}', "--url", double.url) == 0
        assert double.seen[-1].headers["authorization"] == "Bearer t0k"
        assert double.seen[-1].headers["x-scope-orgid"] == "ops"


def _failover_story(double: LokiApiDouble) -> None:
    """A message delayed by a failover: its trace links to the controller's decision."""
    double.add_trace(
        [
            _span(MSG, "a000000000000001", 100, 900, "produce", "producer", "a"),
            _span(
                MSG,
                "a000000000000002",
                150,
                880,
                "deliver",
                "eap",
                "b",
                links=(SpanLink(DECISION, "d000000000000001"),),
            ),
        ]
    )
    double.add_trace(
        [
            _span(
                DECISION,
                "d000000000000001",
                200,
                600,
                "failover decision",
                "controller",
                "w",
                events=(SpanEvent(T0_NS + 400 * MS, "fence", {"site": "a"}),),
            )
        ]
    )
    double.answer_logs(
        f'{{site=~".+"}} | trace_id="{MSG}"',
        [
            _line(120, "sent alarm 42", site="a", component="producer", trace_id=MSG),
            _line(700, "delivered after failover", site="b", component="eap", trace_id=MSG),
        ],
    )
    double.answer_logs(
        f'{{site=~".+"}} | trace_id="{DECISION}"',
        [
            _line(
                500,
                "site a is down; b takes over",
                site="w",
                component="controller",
                trace_id=DECISION,
            )
        ],
    )


def test_trace_shows_spans_lines_and_the_linked_decision_as_one_timeline(
    double: LokiApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    _failover_story(double)
    assert bfm("trace", MSG.upper(), "--url", double.url) == 0
    out = capsys.readouterr().out
    texts = [
        "produce",
        "sent alarm 42",
        "deliver",
        "failover decision",
        "fence",
        "site a is down",
        "delivered after failover",
    ]
    positions = [out.index(text) for text in texts]
    assert positions == sorted(positions)
    assert f"trace {MSG}: 3 spans, 3 log lines, sites a, b, w" in out
    assert f"linked traces (one hop, marked ~): {DECISION}" in out
    assert "~0af76519" in out and "-> links to 0af76519" in out
    asked = [r.params.get("query", [r.path])[0] for r in double.seen]
    assert asked == [
        f"/api/traces/{MSG}",
        f"/api/traces/{DECISION}",
        f'{{site=~".+"}} | trace_id="{MSG}"',
        f'{{site=~".+"}} | trace_id="{DECISION}"',
    ]


def test_trace_json_rows_and_no_links(
    double: LokiApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    _failover_story(double)
    assert bfm("trace", MSG, "--url", double.url, "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["ts_ns"] for r in rows] == sorted(r["ts_ns"] for r in rows)
    assert {(r["site"], r["linked"]) for r in rows} == {("a", False), ("b", False), ("w", True)}
    assert rows[0] == {
        "ts_ns": T0_NS + 100 * MS,
        "ts": "2024-05-01T12:00:00.100Z",
        "site": "a",
        "component": "producer",
        "trace_id": MSG,
        "span_id": "a000000000000001",
        "kind": "span",
        "level": "",
        "text": "produce (800.0 ms)",
        "linked": False,
    }
    assert bfm("trace", MSG, "--url", double.url, "--json", "--no-links") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["trace_id"] for r in rows} == {MSG}
    assert not any(DECISION in r.path or DECISION in str(r.params) for r in double.seen[-2:])


def test_trace_id_must_be_32_hex_digits(
    double: LokiApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("4bf92f35", MSG + "0", "z" * 32):
        assert bfm("trace", bad, "--url", double.url) == 2
        assert "is not a trace id; give its 32 hex digits" in capsys.readouterr().err
    assert double.seen == []


def test_trace_not_found_exits_1(double: LokiApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    assert bfm("trace", MSG, "--url", double.url, "--since", "2h") == 1
    err = capsys.readouterr().err
    assert err == (
        f"bfm: no spans and no log lines found for trace {MSG} in the last 2h; "
        "check the id, or look further back with --since.\n"
    )


def test_trace_without_a_trace_backend_still_shows_the_lines(
    double: LokiApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    _failover_story(double)
    traces_url = _closed_port_url()
    assert bfm("trace", MSG, "--url", double.url, "--traces-url", traces_url) == 0
    captured = capsys.readouterr()
    assert "sent alarm 42" in captured.out and "delivered after failover" in captured.out
    assert "failover decision" not in captured.out  # its link was not seen without spans
    assert "bfm: no spans: cannot reach Loki at" in captured.err and traces_url in captured.err


def test_trace_with_nothing_reachable_exits_3(
    double: LokiApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _closed_port_url()
    assert bfm("trace", MSG, "--url", url) == 3
    err = capsys.readouterr().err
    assert url in err and "--url" in err and err.count("\n") == 1
    assert bfm("trace", MSG, "--url", double.url, "--traces-url", url) == 3
    err = capsys.readouterr().err
    assert url in err and "--traces-url" in err and err.count("\n") == 1


def test_trace_searches_every_selector_once_per_line(
    double: LokiApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _line(120, "sent alarm 42", site="a", component="producer", trace_id=MSG)
    double.answer_logs(f'{{site=~".+"}} | trace_id="{MSG}"', [line])
    double.answer_logs(f'{{service_name=~".+"}} | trace_id="{MSG}"', [line])
    args = ["--selector", '{site=~".+"}', "--selector", '{service_name=~".+"}']
    assert bfm("trace", MSG, "--url", double.url, "--json", *args) == 0
    rows = [json.loads(row) for row in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["sent alarm 42"]
    assert len([r for r in double.seen if r.path.endswith("query_range")]) == 2
