"""The rolling update's documents in the store (besides the update's own state).

- ``update/desired/<site>``: what the update executor wants the site to run
  (``DesiredVersions``: component -> version, site item -> version). Written only by the
  leading controller's update executor; a site with no such document keeps what it runs.
- ``update/reported/<site>``: what the site runs now (``ReportedVersions``), written by the
  site's own process about every second: each component's version, readiness and health
  counters (``failover.core.versions.ComponentHealth``) and its site items' versions.
- ``update/state``: the update's state (``failover.core.update_state.UpdateState``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from failover.core.versions import ComponentHealth, check_version
from failover.ports import Conflict, CoordinationStore

UPDATE_STATE_KEY = "update/state"
DESIRED_PREFIX = "update/desired/"
REPORTED_PREFIX = "update/reported/"
DESIRED_SCHEMA = "bfm.desired-versions/1"
REPORTED_SCHEMA = "bfm.reported-versions/1"


def desired_key(site: str) -> str:
    return f"{DESIRED_PREFIX}{site}"


def reported_key(site: str) -> str:
    return f"{REPORTED_PREFIX}{site}"


def _versions(raw: Any, field_name: str) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"field {field_name!r} must be an object of name -> version")
    out = {}
    for name, version in raw.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"field {field_name!r}: names must be non-empty strings")
        try:
            out[name] = check_version(version)
        except ValueError as err:
            raise ValueError(f"field {field_name!r}, {name}: {err}") from None
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class DesiredVersions:
    """What the update wants a site to run; names not listed stay as they are."""

    components: Mapping[str, str] = field(default_factory=dict)
    items: Mapping[str, str] = field(default_factory=dict)  # "os:debian" -> "12.6"

    def to_doc(self) -> dict[str, Any]:
        return {
            "schema": DESIRED_SCHEMA,
            "components": dict(sorted(self.components.items())),
            "items": dict(sorted(self.items.items())),
        }

    @staticmethod
    def from_doc(doc: Any) -> DesiredVersions:
        if not isinstance(doc, Mapping) or doc.get("schema") != DESIRED_SCHEMA:
            raise ValueError(f"not a {DESIRED_SCHEMA} document")
        return DesiredVersions(
            _versions(doc.get("components", {}), "components"),
            _versions(doc.get("items", {}), "items"),
        )


@dataclass(frozen=True)
class ComponentReport:
    """One component at one site: its version, whether it answers, its counters."""

    version: str
    ready: bool
    health: ComponentHealth | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "ready": self.ready,
            "health": self.health.to_doc() if self.health is not None else None,
        }

    @staticmethod
    def from_doc(doc: Any, name: str) -> ComponentReport:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("ready"), bool):
            raise ValueError(f"component {name!r}: needs 'version' and 'ready' (true/false)")
        raw = doc.get("health")
        health = ComponentHealth.from_doc(raw) if raw is not None else None
        return ComponentReport(check_version(doc.get("version")), doc["ready"], health)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ReportedVersions:
    """What a site runs now, as its own process last reported it."""

    site: str
    at_wall_s: float
    components: Mapping[str, ComponentReport] = field(default_factory=dict)
    items: Mapping[str, str] = field(default_factory=dict)
    busy: str = ""  # what the site is changing now ("" when nothing)

    def to_doc(self) -> dict[str, Any]:
        return {
            "schema": REPORTED_SCHEMA,
            "site": self.site,
            "at_wall_s": self.at_wall_s,
            "components": {c: r.to_doc() for c, r in sorted(self.components.items())},
            "items": dict(sorted(self.items.items())),
            "busy": self.busy,
        }

    @staticmethod
    def from_doc(doc: Any) -> ReportedVersions:
        if not isinstance(doc, Mapping) or doc.get("schema") != REPORTED_SCHEMA:
            raise ValueError(f"not a {REPORTED_SCHEMA} document")
        site, at, busy = doc.get("site"), doc.get("at_wall_s"), doc.get("busy", "")
        if not isinstance(site, str) or not site:
            raise ValueError("field 'site' must name the site")
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise ValueError("field 'at_wall_s' must be a number")
        if not isinstance(busy, str):
            raise ValueError("field 'busy' must be a string")
        raw = doc.get("components", {})
        if not isinstance(raw, Mapping):
            raise ValueError("field 'components' must be an object")
        components = {str(c): ComponentReport.from_doc(r, str(c)) for c, r in raw.items()}
        return ReportedVersions(
            site, float(at), components, _versions(doc.get("items", {}), "items"), busy
        )

    def versions(self) -> dict[str, str]:
        """``name -> version`` of components and site items (the planner's ``current``)."""
        return {**{c: r.version for c, r in self.components.items()}, **self.items}


def put_doc(store: CoordinationStore, key: str, value: dict[str, Any], *, attempts: int = 5) -> str:
    """Write ``value`` under ``key`` whatever is there (create, or compare-and-set on the
    revision just read, retried when someone wrote in between); the new revision."""
    for _ in range(attempts - 1):
        got = store.get(key)
        try:
            if got is None:
                return store.create(key, value)
            return store.compare_and_set(key, value, expected_revision=got.revision)
        except Conflict:
            continue
    got = store.get(key)
    if got is None:
        return store.create(key, value)
    return store.compare_and_set(key, value, expected_revision=got.revision)


def read_desired(store: CoordinationStore, site: str) -> DesiredVersions | None:
    """The site's desired versions; None when none were written. ValueError when damaged."""
    got = store.get(desired_key(site))
    return DesiredVersions.from_doc(got.value) if got is not None else None


def read_reported(store: CoordinationStore) -> dict[str, ReportedVersions]:
    """Every site's last report (damaged ones are left out: such a site reports nothing)."""
    reports = {}
    for item in store.list(REPORTED_PREFIX):
        try:
            report = ReportedVersions.from_doc(item.value)
        except ValueError:
            continue
        reports[report.site] = report
    return reports
