"""Fault schedules for the simulator: random generation, JSON form, and shrinking."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from failover.core.topology import Topology

FAULT_KINDS: tuple[str, ...] = (
    "site_crash",
    "component_crash",
    "hang",
    "partition",
    "link_cut",
    "one_way_cut",
    "store_outage",
    "flapping",
)

# Seconds a fault of each kind lasts (low, high).
_DURATION_S: dict[str, tuple[float, float]] = {
    "site_crash": (3.0, 60.0),
    "component_crash": (0.5, 20.0),
    "hang": (0.3, 20.0),
    "partition": (0.5, 60.0),
    "link_cut": (1.0, 60.0),
    "one_way_cut": (1.0, 60.0),
    "store_outage": (0.5, 40.0),
    "flapping": (10.0, 40.0),
}


@dataclass(frozen=True)
class Fault:
    """One fault: what, on which target, from when (simulated s) and for how long.

    Targets: a site (``a``), a component on a site (``a/eap``), a link (``a-b``), a
    direction (``a>b``) or ``store``. Flapping cuts a site off and back repeatedly,
    ``flap_down_s`` cut and ``flap_up_s`` connected, for ``duration_s`` in all.
    """

    at_s: float
    kind: str
    target: str
    duration_s: float
    flap_down_s: float = 0.0
    flap_up_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Fault:
        try:
            fault = Fault(
                at_s=float(data["at_s"]),
                kind=str(data["kind"]),
                target=str(data["target"]),
                duration_s=float(data["duration_s"]),
                flap_down_s=float(data.get("flap_down_s", 0.0)),
                flap_up_s=float(data.get("flap_up_s", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed fault {data!r}: {err}") from None
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if not (math.isfinite(fault.at_s) and fault.at_s >= 0):
            raise ValueError(f"fault at_s must be a finite time >= 0, got {fault.at_s}")
        for name in ("duration_s", "flap_down_s", "flap_up_s"):
            value = getattr(fault, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"fault {name} must be a finite number >= 0, got {value}")
        if fault.duration_s <= 0:
            raise ValueError(f"fault duration_s must be > 0, got {fault.duration_s}")
        if fault.kind == "flapping" and (fault.flap_down_s <= 0 or fault.flap_up_s <= 0):
            raise ValueError("a flapping fault needs flap_down_s > 0 and flap_up_s > 0")
        return fault


def check_targets(faults: Sequence[Fault], topology: Topology) -> None:
    """ValueError naming the first fault whose target does not fit the topology."""
    sites = set(topology.site_names)
    for fault in faults:
        target, ok = fault.target, False
        if fault.kind == "store_outage":
            ok = target == "store"
        elif fault.kind == "component_crash":
            site, _, component = target.partition("/")
            ok = topology.is_worker(site) and component in topology.components
        elif fault.kind == "link_cut":
            x, _, y = target.partition("-")
            ok = {x, y} <= sites and x != y
        elif fault.kind == "one_way_cut":
            x, _, y = target.partition(">")
            ok = {x, y} <= sites and x != y
        else:
            ok = target in sites
        if not ok:
            raise ValueError(
                f"fault {fault.kind} at {fault.at_s} s has target {target!r}, which does not "
                f"fit sites {sorted(sites)} (forms: 'a', 'a/eap', 'a-b', 'a>b', 'store')"
            )


def random_fault(rng: random.Random, topology: Topology, at_s: float) -> Fault:
    kind = rng.choice(FAULT_KINDS)
    low, high = _DURATION_S[kind]
    # A third of the faults are short, around the renew deadline and the lease duration,
    # where the timing races are.
    duration = rng.uniform(low, min(high, 3.0)) if rng.random() < 0.3 else rng.uniform(low, high)
    sites = list(topology.site_names)
    workers = list(topology.workers)
    site = rng.choice(workers) if rng.random() < 0.8 else rng.choice(sites)
    if kind == "component_crash":
        return Fault(
            at_s, kind, f"{rng.choice(workers)}/{rng.choice(topology.components)}", duration
        )
    if kind in ("link_cut", "one_way_cut"):
        x, y = rng.sample(sites, 2)
        return Fault(at_s, kind, f"{x}-{y}" if kind == "link_cut" else f"{x}>{y}", duration)
    if kind == "store_outage":
        return Fault(at_s, kind, "store", duration)
    if kind == "flapping":
        return Fault(at_s, kind, site, duration, rng.uniform(0.3, 4.0), rng.uniform(0.3, 6.0))
    return Fault(at_s, kind, site, duration)


def random_schedule(
    rng: random.Random,
    topology: Topology,
    *,
    duration_s: float,
    min_faults: int,
    quiet_tail_s: float,
) -> list[Fault]:
    """Faults one after another with gaps, sometimes overlapping, at least ``min_faults``.

    The last ``quiet_tail_s`` seconds stay free so the run can show it converges.
    """
    last_end = duration_s - quiet_tail_s
    for _ in range(100):
        faults: list[Fault] = []
        t = rng.uniform(5.0, 20.0)
        while True:
            fault = random_fault(rng, topology, t)
            if fault.at_s + fault.duration_s > last_end:
                break
            faults.append(fault)
            if rng.random() < 0.15:
                t = fault.at_s + rng.uniform(0.0, fault.duration_s)  # overlap: a double fault
            else:
                t = (
                    fault.at_s
                    + fault.duration_s
                    + rng.choice((rng.uniform(0.2, 3), rng.uniform(5, 40)))
                )
        if len(faults) >= min_faults:
            return faults
    raise ValueError(
        f"cannot fit {min_faults} faults into {duration_s} s with a {quiet_tail_s} s quiet tail; "
        "make the run longer"
    )


def shrink(
    faults: Sequence[Fault],
    still_fails: Callable[[list[Fault]], bool],
    *,
    max_tries: int = 40,
) -> list[Fault]:
    """A smaller schedule that still fails: drop chunks of faults (ddmin), then shorten them.

    ``still_fails`` re-runs the simulation; ``max_tries`` bounds how often.
    """
    current = list(faults)
    tries = 0
    chunks = 2
    while len(current) >= 2 and tries < max_tries:
        size = -(-len(current) // chunks)
        for start in range(0, len(current), size):
            candidate = current[:start] + current[start + size :]
            tries += 1
            if candidate and still_fails(candidate):
                current, chunks = candidate, max(chunks - 1, 2)
                break
            if tries >= max_tries:
                break
        else:
            if chunks >= len(current):
                break
            chunks = min(len(current), chunks * 2)
    for i, fault in enumerate(list(current)):
        if tries >= max_tries or fault.duration_s < 1.0:
            continue
        candidate = list(current)
        candidate[i] = replace(fault, duration_s=round(fault.duration_s / 2, 3))
        tries += 1
        if still_fails(candidate):
            current = candidate
    return current
