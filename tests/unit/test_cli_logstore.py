"""`bfm logstore serve`: bad options and unusable files are usage errors (exit 2) naming
the fix, before anything listens; a good invocation serves until SIGTERM (a real process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from failover.cli.logstore import parse_listen, parse_size_bytes
from failover.cli.main import build_app, run

APP = build_app(["failover.cli.logstore"])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--listen", "3100"], "HOST:PORT"),
        (["--listen", "127.0.0.1:99999"], "HOST:PORT"),
        (["--max-disk", "lots"], "is not a size"),
        (["--max-disk", "10KB"], "below 1 MB"),
        (["--retention", "-1d"], "--retention"),
    ],
)
def test_bad_options_name_the_fix(
    args: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["logstore", "serve", "--data", str(tmp_path / "l.db"), *args], cli=APP)
    assert code == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "l.db").exists()


def test_a_file_that_is_not_a_store_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "notes.txt"
    data.write_text("my notes, not a database\n" * 100)
    code = run(["logstore", "serve", "--data", str(data), "--listen", "127.0.0.1:0"], cli=APP)
    assert code == 2
    assert str(data) in capsys.readouterr().err
    assert data.read_text().startswith("my notes")  # nothing lost


def test_sizes_and_addresses() -> None:
    assert parse_size_bytes("30GB") == 30 * 10**9
    assert parse_size_bytes("512MiB") == 512 * 2**20
    assert parse_listen("[::1]:3100") == ("::1", 3100)


def test_serves_until_sigterm(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    command = [sys.executable, "-m", "failover", "logstore", "serve", f"--data={tmp_path / 'l.db'}"]
    proc = subprocess.Popen(
        [*command, "--listen=127.0.0.1:0", f"--url-file={url_file}"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BFM_LOGSTORE_TOKEN": "t0ken"},
    )
    try:
        deadline_s = time.monotonic() + 30
        while not url_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline_s
            time.sleep(0.05)
        url = url_file.read_text().strip()
        assert requests.get(url + "/ready", timeout=10).status_code == 200
        assert requests.get(url + "/loki/api/v1/labels", timeout=10).status_code == 401
        answer = requests.get(
            url + "/loki/api/v1/labels", headers={"Authorization": "Bearer t0ken"}, timeout=10
        )
        assert answer.json() == {"status": "success", "data": []}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "bearer token required" in err and "stopped" in err
