"""The demo's log and trace store: ``bfm logstore serve`` as a process of its own.

It listens on a free loopback port and writes its URL to ``<run_dir>/logstore.url`` when it
serves; the demo then points every process at it (``BFM_LOKI_URL`` for the logs, and
``OTEL_EXPORTER_OTLP_ENDPOINT`` for the spans unless the operator gave a collector), so
``bfm logs`` and ``bfm trace`` can follow the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

URL_FILE = "logstore.url"
DATA_FILE = "logs.db"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class LogStoreStartError(RuntimeError):
    """The store did not serve in time (its output says why)."""


@dataclass
class LogStoreProcess:
    run_dir: Path
    max_disk: str = "2GB"  # a demo run is short; the budget keeps a forgotten one small
    retention: str = "7d"
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    url: str = field(default="", init=False)

    @property
    def log_path(self) -> Path:
        return self.run_dir / "logstore.log"

    def start(self) -> str:
        """Start it and wait until it serves; its URL."""
        url_file = self.run_dir / URL_FILE
        url_file.unlink(missing_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
                [
                    sys.executable,
                    "-m",
                    "failover",
                    "logstore",
                    "serve",
                    f"--data={self.run_dir / DATA_FILE}",
                    "--listen=127.0.0.1:0",
                    f"--max-disk={self.max_disk}",
                    f"--retention={self.retention}",
                    f"--url-file={url_file}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if k != "BFM_LOKI_URL"},
            )
        deadline_s = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline_s:
            if url_file.exists():
                self.url = url_file.read_text(encoding="utf-8").strip()
                return self.url
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise LogStoreStartError(
            f"the demo's log store did not start within {START_TIMEOUT_S:g} s; see {self.log_path}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time (our own child, by PID)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
