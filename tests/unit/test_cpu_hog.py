"""The reference components' CPU hog (failover.workload.cpu_hog): it spins, stops on
request, stops by itself after its bound, and a second start changes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from failover.workload.cpu_hog import CpuHog

WAIT_S = 10.0  # a ceiling that catches a hang, not a speed


def wait_for(condition: object, timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.01)
    return False


def test_it_spins_until_stopped() -> None:
    hog = CpuHog(time.monotonic)
    assert hog.start()
    assert not hog.start(), "a second start while it spins changes nothing"
    assert wait_for(lambda: hog.turns > 0)
    cpu_before_s = time.thread_time()  # this thread's own time: the hog's is elsewhere
    process_before_s = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - process_before_s > 0.1 + (time.thread_time() - cpu_before_s)
    assert hog.stop()
    assert not hog.running
    assert not hog.stop(), "stopping what does not spin says so"


def test_it_stops_by_itself_after_its_bound() -> None:
    hog = CpuHog(time.monotonic, max_duration_s=0.2)
    hog.start()
    assert wait_for(lambda: not hog.running), "the hog outlived its bound"
    assert hog.turns > 0


def test_sigusr1_starts_it_in_a_component_process_and_sigusr2_stops_it() -> None:
    """The same handlers as ``bfm component run``: in a child process of its own, CPU time
    read from /proc grows while it spins and stops growing after SIGUSR2."""
    code = (
        "import asyncio, signal, time\n"
        "from failover.workload.cpu_hog import CpuHog\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    hog = CpuHog(time.monotonic)\n"
        "    loop.add_signal_handler(signal.SIGUSR1, hog.start)\n"
        "    loop.add_signal_handler(signal.SIGUSR2, hog.stop)\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.sleep(30)\n"
        "asyncio.run(main())\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        idle_s = _cpu_s(child.pid)
        os.kill(child.pid, signal.SIGUSR1)
        assert wait_for(lambda: _cpu_s(child.pid) - idle_s > 0.3), "no CPU used after SIGUSR1"
        os.kill(child.pid, signal.SIGUSR2)
        time.sleep(0.3)
        stopped_s = _cpu_s(child.pid)
        time.sleep(0.5)
        assert _cpu_s(child.pid) - stopped_s < 0.2, "still spinning after SIGUSR2"
    finally:
        child.kill()
        child.wait(timeout=10)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
