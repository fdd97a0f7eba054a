"""The demo's rolling-update scenarios: a full release, and a bad one that is rolled back.

``rolling-update`` updates all six components at both worker sites to 2.0.0, and the OS
and cluster of every site (the witness first: its steps never run while a worker site is
drained); ``bad-update`` gives EAP a test version that passes readiness and then refuses
every message (``+fail-after-ready``, ``failover.core.versions``), so the canary's gate
fails and site a is rolled back; ``update-leader-crash`` updates the components and kills
the leading controller's site process (kill -9) in the middle: the next leader resumes
the update from its state in the store. The release is written to ``<run_dir>/release-*.yaml``,
the same file ``bfm update apply`` takes, and started through the same functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from failover.core.topology import Topology
from failover.core.update_manifest import parse_release
from failover.core.update_plan import plan_update
from failover.core.versions import FAIL_AFTER_READY
from failover.ports import Clock, CoordinationStore
from failover.runtime.admin import Refused
from failover.runtime.update_admin import begin, current_versions, read_update
from failover.runtime.update_checks import precheck_problems, read_snapshot

UPDATE_SCENARIOS = ("rolling-update", "bad-update", "update-leader-crash")
DEMO_SOAK_S = 5.0
DEMO_CANARY_SHARE = 0.5


def demo_release(scenario: str, topology: Topology) -> dict[str, Any]:
    """The manifest of the scenario's release."""
    if scenario == "update-leader-crash":  # the components only: quicker, same steps
        return {"version": "2.0", "components": dict.fromkeys(topology.components, "2.0.0")}
    if scenario == "bad-update":
        components = {c: "1.0.0" for c in topology.components}
        components["eap"] = f"2.0.0+{FAIL_AFTER_READY}"
        return {"version": "2.0-bad", "components": components}
    platform = [
        {"kind": "os", "name": "debian", "version": "12.6"},
        {"kind": "cluster", "name": "k3s", "version": "1.30.2"},
    ]
    return {
        "version": "2.0",
        "components": {c: "2.0.0" for c in topology.components},
        "site_steps": {s: platform for s in topology.site_names},
    }


def write_release(run_dir: Path, scenario: str, topology: Topology) -> Path:
    path = run_dir / f"release-{scenario}.yaml"
    path.write_text(
        "# Written by bfm demo; apply it with: bfm update apply "
        + str(path)
        + "\n"
        + yaml.safe_dump(demo_release(scenario, topology), sort_keys=False),
        encoding="utf-8",
    )
    return path


class UpdateReadiness:
    """Whether the update may start (every site up and reporting, placement even), and
    the reasons it may not, as last seen (the report names them if it never started)."""

    def __init__(self, store: CoordinationStore, topology: Topology, clock: Clock) -> None:
        self.store, self.topology, self.clock = store, topology, clock
        self.problems: list[str] = ["not checked yet"]

    def ready(self) -> bool:
        snap = read_snapshot(self.store, self.topology, now_wall_s=self.clock.wall())
        self.problems = precheck_problems(snap, self.topology)
        return not self.problems

    def waiting_for(self) -> str:
        return "the update's precheck: " + "; ".join(self.problems)


def start_update(store: CoordinationStore, scenario: str, topology: Topology, clock: Clock) -> None:
    """Plan the scenario's release from what the sites report, and start it."""
    release = parse_release(demo_release(scenario, topology), topology)
    current = current_versions(store, topology)
    plan = plan_update(
        current, release, topology, canary_share=DEMO_CANARY_SHARE, soak_s=DEMO_SOAK_S
    )
    try:
        begin(store, plan, current, topology=topology, now_wall_s=clock.wall())
    except Refused as err:
        raise RuntimeError(f"the demo could not start its update: {err}") from None


def update_finished(store: CoordinationStore) -> bool:
    state, _ = read_update(store)
    return state is not None and state.finished
