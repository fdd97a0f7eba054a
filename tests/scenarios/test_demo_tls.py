"""The demo over TLS (``bfm demo --tls``): every backbone connection (producer to routers,
routers to modules, the sites' pings) is mutual TLS with a development CA, and a site
crash under load still loses nothing (issue 11, least exposure; SECURITY.md).

While the demo runs, the test pings a module of site a itself: with the run's
certificate it answers, in plain TCP it does not (the listener speaks only TLS), so the
run cannot pass by quietly falling back to plain TCP.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from demo_runs import assert_judged_clean, run_demo

from failover.adapters.tls import TlsFiles
from failover.runtime.probes import OK, ping_answer
from failover.workload.endpoints import Endpoints

pytestmark = pytest.mark.scenario
WAIT_S = 90.0  # a ceiling that catches a hang


def test_a_site_crash_over_tls_loses_nothing_and_plain_tcp_is_not_answered(
    tmp_path: Path,
) -> None:
    outcome: dict[str, Any] = {}

    def demo() -> None:
        outcome["run"] = run_demo(
            tmp_path, "site-crash", duration_s=20, rate=150, shards=4, tls=True
        )

    thread = threading.Thread(target=demo, daemon=True)
    thread.start()
    run_dir = tmp_path / "run"
    tls = TlsFiles(
        run_dir / "tls" / "site.pem", run_dir / "tls" / "site.key", run_dir / "tls" / "ca.pem"
    )
    answers: tuple[str, str] | None = None
    deadline = time.monotonic() + WAIT_S
    while answers is None and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.2)
        try:
            address = Endpoints.load(run_dir).sites["b"].modules["eap"]
        except (OSError, ValueError, KeyError):
            continue  # not written yet
        if not tls.ca.exists():
            continue
        secure = ping_answer(address, timeout_s=1.0, tls=tls.client_context())[0]
        if secure == OK:
            answers = (secure, ping_answer(address, timeout_s=1.0)[0])
    thread.join(timeout=WAIT_S + 120)
    assert answers is not None, "b's eap never answered a TLS ping"
    assert answers[1] != OK, "a plain TCP ping was answered: the module does not require TLS"
    done, data = outcome["run"]
    assert_judged_clean(done, data)
