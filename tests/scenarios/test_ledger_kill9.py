"""A ledger writer killed with SIGKILL loses nothing it had reported as committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from failover.workload.ledger import Ledger

WRITER = """
import sys
from pathlib import Path
from failover.workload.envelope import Envelope
from failover.workload.ledger import Ledger
ledger = Ledger(Path(sys.argv[1]), site="a")
i = 0
while True:
    batch = [Envelope(f"m{i + j}", "alarm", "k", 0, 1.0, epoch=1) for j in range(20)]
    ledger.apply(batch, applied_at=1.0)
    i += 20
    print(i, flush=True)  # acknowledged: everything below i is committed
"""


def test_every_acknowledged_message_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "eap.db"
    for kill_after in (1, 40):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        acked = 0
        deadline = time.monotonic() + 60
        while acked < kill_after * 20 and time.monotonic() < deadline:
            acked = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        ledger = Ledger(path, site="a")
        ids = {row.id for row in ledger.rows()}
        ledger.close()
        missing = [f"m{i}" for i in range(acked) if f"m{i}" not in ids]
        assert acked >= kill_after * 20
        assert missing == []
