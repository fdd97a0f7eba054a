"""The scenario tests can fail: with fencing switched off (``BFM_TEST_DISABLE_FENCING=1``, a
test build) the checker must catch the stale writes of a resumed module and of a hand-back.

Real processes, as in ``test_demo.py``; the only difference is the environment. With
fencing on, the same scenarios end clean (``test_demo.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from demo_runs import run_demo


@pytest.mark.parametrize(
    ("scenario", "duration_s", "rate"),
    [
        ("component-pause", 14, 300),
        # a returns 10 s after the crash and gets work back after its 10 s hold-off
        ("site-return", 40, 400),
    ],
)
def test_without_fencing_the_checker_finds_stale_writes(
    scenario: str, duration_s: int, rate: int, tmp_path: Path
) -> None:
    done, data = run_demo(
        tmp_path,
        scenario,
        duration_s=duration_s,
        rate=rate,
        shards=8,
        env={"BFM_TEST_DISABLE_FENCING": "1"},
    )
    assert done.returncode == 1, done.stdout + done.stderr  # the checker failed the run
    assert data["stale_epoch_accepts"] > 0, data
    assert "single_writer" in {v["invariant"] for v in data["violations"]}
