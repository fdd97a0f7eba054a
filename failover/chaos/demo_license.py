"""The demo's licensing: a dev license for every run, and the license scenarios.

Every demo run gets ``<run dir>/license/`` (``dev_setup``: a throwaway key pair and the
cloned dongle at each site, valid for a year), so ``bfm license`` shows a licensed system.
The scenarios change the dongles on schedule while alarms flow, and ``LicenseWatch``
records every change of the leader's verdict for the report:

- ``license-site-crash``: site a crashes (kill -9) and comes back: still licensed by b, w;
- ``license-dongles-removed``: the files at a and b are removed (licensed by w alone),
  then w's (grace, then unlicensed after the demo's short grace); ``bfm update apply``
  is then run for real and must be refused; the files come back (licensed again);
- ``license-bad-files``: a's file is tampered with, b gets another system's license and
  w one that expires 8 s later: licensed by w until it expires, then grace; the good
  files come back 6 s later (before the 10 s grace ends).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from failover.adapters.files import write_text_atomically
from failover.adapters.license_config import DEV_PRIVATE_KEY, LicenseConfig, dev_setup
from failover.adapters.license_files import LicensePayload, issue, load_private_key
from failover.chaos.schedule import Step
from failover.core.topology import Topology
from failover.ports import CoordinationStore
from failover.runtime.license_docs import read_status

LICENSE_SCENARIOS = ("license-site-crash", "license-dongles-removed", "license-bad-files")
DEMO_SYSTEM_ID = "hemisphere-demo"
SCENARIO_GRACE_S = 10.0  # the license scenarios' grace period (72 h otherwise)
SHORT_LIVED_S = 8.0  # license-bad-files: w's file expires this long after it is installed


def set_up(run_dir: Path, topology: Topology, scenario: str) -> LicenseConfig:
    """The run's license directory (the site processes find it as ``<run dir>/license``)."""
    grace_s = SCENARIO_GRACE_S if scenario in LICENSE_SCENARIOS else 72 * 3600.0
    return dev_setup(
        run_dir / "license",
        system_id=DEMO_SYSTEM_ID,
        sites=topology.site_names,
        now_wall_s=time.time(),
        grace_s=grace_s,
    )


class LicenseWatch:
    """Every change of the leader's license verdict (state, who licenses, each dongle)."""

    def __init__(self, store: CoordinationStore) -> None:
        self.store = store
        self.timeline: list[dict[str, Any]] = []
        self.update_attempts: list[dict[str, Any]] = []

    def observe(self) -> None:
        try:
            status = read_status(self.store)
        except ValueError:
            return
        if status is None:
            return
        seen = status.summary()
        if not self.timeline or {k: self.timeline[-1][k] for k in seen} != seen:
            self.timeline.append({"at_wall_s": round(time.time(), 3), **seen})

    def state(self) -> str:
        self.observe()
        return self.timeline[-1]["state"] if self.timeline else ""

    def report(self) -> dict[str, Any]:
        return {"timeline": self.timeline, "update_attempts": self.update_attempts}


class LicenseScenario:
    """The steps of one license scenario, on the run's license directory."""

    def __init__(
        self,
        scenario: str,
        config: LicenseConfig,
        watch: LicenseWatch,
        run_dir: Path,
        topology: Topology,
        site_control: tuple[Callable[[str], None], Callable[[str], None]],
    ) -> None:
        self.scenario, self.config, self.watch = scenario, config, watch
        self.run_dir, self.topology = run_dir, topology
        self.kill_site, self.start_site = site_control
        self.good = {s: config.license_file(s).read_text() for s in topology.site_names}

    def steps(self, at: float) -> list[Step]:
        if self.scenario == "license-site-crash":
            return [
                Step(at, "site_crash", "a", "inject", lambda: self.kill_site("a")),
                Step(at + 15, "site_crash", "a", "heal", lambda: self.start_site("a")),
            ]
        if self.scenario == "license-dongles-removed":
            return [
                Step(at, "dongle_removed", "a,b", "inject", lambda: self._remove("a", "b")),
                Step(at + 8, "dongle_removed", "w", "inject", lambda: self._remove("w")),
                Step(
                    at + 12,
                    "update",
                    "release",
                    "inject",
                    self.try_update,
                    lambda: self.watch.state() == "unlicensed",
                ),
                Step(at + 14, "dongle_removed", "a,b,w", "heal", self._restore),
            ]
        if self.scenario == "license-bad-files":
            return [
                Step(at, "dongle_bad", "a,b,w", "inject", self._bad_files),
                Step(at + 14, "dongle_bad", "a,b,w", "heal", self._restore),
            ]
        return []

    def _remove(self, *sites: str) -> None:
        for site in sites:
            self.config.license_file(site).unlink(missing_ok=True)

    def _restore(self) -> None:
        for site, text in self.good.items():
            write_text_atomically(self.config.license_file(site), text)

    def _bad_files(self) -> None:
        """a: a signed field changed (tampered); b: another system's license signed by the
        same key (foreign); w: valid now, expiring ``SHORT_LIVED_S`` later."""
        doc = json.loads(self.good["a"])
        doc["payload"]["expires_at"] = "2099-01-01T00:00:00Z"
        write_text_atomically(self.config.license_file("a"), json.dumps(doc, indent=2))
        key = load_private_key(self.config.directory / DEV_PRIVATE_KEY)
        now = time.time()
        foreign = LicensePayload("another-system", "HSD-OTHER-0002", now, now + 365 * 86400.0)
        write_text_atomically(self.config.license_file("b"), issue(foreign, key))
        short = LicensePayload(DEMO_SYSTEM_ID, "HSD-DEV-0001", now, now + SHORT_LIVED_S)
        write_text_atomically(self.config.license_file("w"), issue(short, key))

    def try_update(self) -> None:
        """``bfm update apply`` for real, as an operator would run it now."""
        release = self.run_dir / "release-license.yaml"
        components = "\n".join(f"  {c}: 2.0.0" for c in self.topology.components)
        release.write_text(f"version: '2.0'\ncomponents:\n{components}\n", encoding="utf-8")
        done = subprocess.run(  # noqa: S603 - our own interpreter and fixed arguments
            [
                *(sys.executable, "-m", "failover", "update", "apply", str(release)),
                f"--run-dir={self.run_dir}",
                "--no-wait",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=dict(os.environ),
        )
        self.watch.update_attempts.append(
            {
                "at_wall_s": round(time.time(), 3),
                "license_state": self.watch.state(),
                "exit_code": done.returncode,
                "output": (done.stdout + done.stderr).strip()[-2000:],
            }
        )
