"""Running `bfm demo --headless` as a subprocess for the scenario tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def run_demo(
    tmp_path: Path,
    scenario: str,
    *,
    duration_s: int,
    rate: int,
    shards: int,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300,
    store: str = "sqlite",
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """The finished demo (exit code, output) and its JSON report; the run is in
    ``tmp_path / "run"``."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "failover",
            "demo",
            "--headless",
            f"--duration={duration_s}s",
            f"--rate={rate}",
            f"--shards={shards}",
            f"--scenario={scenario}",
            f"--run-dir={tmp_path / 'run'}",
            f"--report={report}",
            f"--store={store}",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **(env or {})},
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return done, data
