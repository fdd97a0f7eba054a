"""Grants over HTTP (failover/runtime/grants_http.py): a real server on 127.0.0.1 and a
real client; each side's monotonic clock is a fake of its own, far apart, as two hosts'."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest

from failover.adapters.tls import TlsFiles
from failover.adapters.tls_dev import write_dev_pki
from failover.runtime.grants import NO_GRANTS, Grants
from failover.runtime.grants_http import (
    GrantsBoard,
    GrantsFetcher,
    GrantsServer,
    from_wire,
    to_wire,
)


class Mono:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


GRANTS = Grants(
    "a",
    session=7,
    valid_until_mono_s=1003.0,
    epochs={("eep", 0): 4, ("eep", 1): 5},
    decisions={"eep": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
)


@pytest.fixture
def served() -> tuple[GrantsBoard, GrantsServer, Mono]:
    board, site_clock = GrantsBoard(), Mono(1000.0)
    server = GrantsServer(board, bind=("127.0.0.1", 0), monotonic=site_clock)
    server.start()
    yield board, server, site_clock
    server.close()


def url_of(server: GrantsServer) -> str:
    host, port = server.address
    return f"http://{host}:{port}/grants"


def test_the_wire_names_how_long_the_grants_hold_not_until_when() -> None:
    data = json.loads(to_wire(GRANTS, now_mono_s=1001.0))
    assert data["valid_for_s"] == pytest.approx(2.0)
    assert "valid_until_mono_s" not in data
    back = from_wire(to_wire(GRANTS, now_mono_s=1001.0), asked_at_mono_s=50.0)
    assert back.valid_until_mono_s == pytest.approx(52.0)
    assert back.epochs == GRANTS.epochs and back.decisions == GRANTS.decisions
    assert back.session == 7 and back.site == "a"
    # run out, and no grants at all: nothing left to hold
    assert json.loads(to_wire(GRANTS, now_mono_s=2000.0))["valid_for_s"] == 0.0
    assert (
        from_wire(to_wire(NO_GRANTS, now_mono_s=5.0), 9.0).epoch("eep", 0, now_mono_s=9.0) is None
    )


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "malformed grants answer"),
        (b'{"site": "a", "session": 1, "shards": {}}', "valid_for_s"),
        (b'{"site": "a", "session": 1, "shards": {}, "valid_for_s": -1}', "not a finite"),
        (b'{"site": "a", "session": 1, "shards": {}, "valid_for_s": 1e999}', "not a finite"),
        (
            b'{"site": "a", "session": 1, "shards": {"eep": {"x": 1}}, "valid_for_s": 1}',
            "malformed",
        ),
    ],
)
def test_a_malformed_answer_is_refused_with_its_problem(body: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        from_wire(body, asked_at_mono_s=0.0)


def test_a_component_holds_a_grant_no_longer_than_the_site_does(
    served: tuple[GrantsBoard, GrantsServer, Mono],
) -> None:
    board, server, _ = served
    board.publish(GRANTS)  # holds until 1003.0 on the site's clock: 3 s from now
    pod_clock = Mono(5.0)  # another host: its clock has nothing in common with the site's
    fetcher = GrantsFetcher(url_of(server), monotonic=pod_clock)
    assert fetcher.fetch_once()
    assert fetcher.epoch("eep", 1) == (5, pytest.approx(8.0))
    assert fetcher.epoch("aam", 0) is None  # not granted
    pod_clock.now_s = 7.9
    assert fetcher.epoch("eep", 0) is not None
    pod_clock.now_s = 8.01  # 3 s after asking: the site's grant has run out too
    assert fetcher.epoch("eep", 0) is None


def test_the_grant_counts_from_when_the_question_was_sent(
    served: tuple[GrantsBoard, GrantsServer, Mono],
) -> None:
    """A slow answer never lengthens a grant: its time is counted from the asking."""
    board, server, _ = served
    board.publish(GRANTS)

    class SlowClock(Mono):
        def __call__(self) -> float:
            value = self.now_s
            self.now_s += 2.0  # the answer takes 2 s on this host's clock
            return value

    pod_clock = SlowClock(0.0)
    fetcher = GrantsFetcher(url_of(server), monotonic=pod_clock)
    assert fetcher.fetch_once()
    assert fetcher.current().valid_until_mono_s == pytest.approx(3.0)  # asked at 0, not 2


def test_when_the_site_stops_answering_the_last_grants_run_out_by_themselves(
    served: tuple[GrantsBoard, GrantsServer, Mono], caplog: pytest.LogCaptureFixture
) -> None:
    board, server, _ = served
    board.publish(GRANTS)
    pod_clock = Mono(100.0)
    fetcher = GrantsFetcher(url_of(server), monotonic=pod_clock, timeout_s=0.5)
    assert fetcher.fetch_once()
    server.close()  # the site process is gone
    with caplog.at_level(logging.WARNING, logger="bfm.grants"):
        assert not fetcher.fetch_once()
        assert not fetcher.fetch_once()
    assert fetcher.errors == 2
    warnings = [r for r in caplog.records if "cannot read the site's grants" in r.message]
    assert len(warnings) == 1 and "is the site process running" in warnings[0].message
    pod_clock.now_s = 102.5
    assert fetcher.epoch("eep", 0) == (4, pytest.approx(103.0))  # kept until it runs out
    pod_clock.now_s = 103.1
    assert fetcher.epoch("eep", 0) is None


def test_a_renewed_grant_is_taken_on_the_next_question(
    served: tuple[GrantsBoard, GrantsServer, Mono],
) -> None:
    board, server, _ = served
    pod_clock = Mono(0.0)
    fetcher = GrantsFetcher(url_of(server), monotonic=pod_clock, interval_s=0.05)
    fetcher.start()  # asks once before returning, then in the background
    try:
        assert fetcher.epoch("eep", 0) is None  # nothing published yet
        board.publish(GRANTS)
        for _ in range(200):  # bounded: 200 x 50 ms
            if fetcher.epoch("eep", 0) is not None:
                break
            fetcher._stop.wait(0.05)
        assert fetcher.epoch("eep", 0) is not None
        assert fetcher.fetches >= 2
    finally:
        fetcher.stop()


def test_other_paths_are_not_found(served: tuple[GrantsBoard, GrantsServer, Mono]) -> None:
    _, server, _ = served
    host, port = server.address
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5)
    assert caught.value.code == 404
    assert b"/grants" in caught.value.read()


# -- mutual TLS (BFM_TLS_*: the backbone's certificates) ----------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsFiles, TlsFiles]:
    """The site CA's certificate for 127.0.0.1, and one of another CA."""
    ours = write_dev_pki(tmp_path_factory.mktemp("ours"), addresses=("127.0.0.1",))
    theirs = write_dev_pki(tmp_path_factory.mktemp("theirs"), addresses=("127.0.0.1",))
    return ours, theirs


def test_the_grants_go_over_mutual_tls_where_the_backbone_has_it(
    pki: tuple[TlsFiles, TlsFiles],
) -> None:
    ours, theirs = pki
    board = GrantsBoard()
    board.publish(GRANTS)
    server = GrantsServer(
        board, bind=("127.0.0.1", 0), monotonic=Mono(1000.0), tls=ours.server_context()
    )
    host, port = server.start()
    url = f"https://{host}:{port}/grants"
    try:
        fetcher = GrantsFetcher(url, monotonic=Mono(0.0), tls=ours.client_context())
        assert fetcher.fetch_once() and fetcher.epoch("eep", 0) is not None
        # a component of another CA is refused, and one that does not trust ours refuses it
        stranger = GrantsFetcher(url, monotonic=Mono(0.0), tls=theirs.client_context())
        assert not stranger.fetch_once() and stranger.epoch("eep", 0) is None
        # plain HTTP to the TLS listener gets nothing
        plain = GrantsFetcher(f"http://{host}:{port}/grants", monotonic=Mono(0.0))
        assert not plain.fetch_once()
    finally:
        server.close()


def test_a_client_never_falls_back_to_plain_http_by_itself(
    pki: tuple[TlsFiles, TlsFiles],
) -> None:
    ours, _ = pki
    with pytest.raises(ValueError, match="must be https://: TLS is configured"):
        GrantsFetcher("http://x:1/grants", monotonic=Mono(0.0), tls=ours.client_context())
    with pytest.raises(ValueError, match="must be http://: https needs the backbone's BFM_TLS_"):
        GrantsFetcher("https://x:1/grants", monotonic=Mono(0.0))
