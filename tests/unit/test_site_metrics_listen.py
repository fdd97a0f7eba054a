"""``BFM_METRICS_LISTEN``: where a site process serves /metrics (the chart exposes it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from failover.cli.main import run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_site_process_serves_metrics_where_it_is_told(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "BFM_METRICS_LISTEN": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "failover",
            "site",
            "run",
            "--site=w",
            f"--store=sqlite:///{tmp_path / 'bfm.db'}",
            "--duration=20s",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # /metrics answers before the controller's first round exports its series: ask
        # until the series is there (bounded)
        wanted = 'bfm_controller_is_leader{component="controller",site="w"}'
        deadline_s = time.monotonic() + 30.0
        answer = None
        while time.monotonic() < deadline_s and (answer is None or wanted not in answer.text):
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1.0)
            except requests.ConnectionError:
                answer = None
            time.sleep(0.2)
        assert answer is not None and answer.status_code == 200
        assert wanted in answer.text
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("bad", ["9464", "host:", ":x", "0.0.0.0:70000"])
def test_a_bad_metrics_address_is_a_usage_error_naming_it(
    bad: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BFM_METRICS_LISTEN", bad)
    assert run(["site", "run", "--site=w", "--store=memory://", "--duration=1s"]) == 2
    err = capsys.readouterr().err
    assert "BFM_METRICS_LISTEN" in err and "0.0.0.0:9464" in err and "Traceback" not in err
