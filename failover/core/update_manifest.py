"""The release manifest of a rolling update: component versions and site-level steps.

A release names one version for every component of the topology and, per site, the
site-level steps (operating system, cluster components) to bring it to. The runtime
loads the manifest from YAML or JSON; ``parse_release`` checks the loaded mapping and
reports every problem at once, each naming the field and the fix::

    version: "2024.2"
    components: {backbone: "2.1.0", eep: "1.4.0", eap: "1.4.0", aam: "3.0.1",
                 msm: "1.2.0", gsm: "1.0.3"}
    site_steps:
      a: [{kind: os, name: debian, version: "12.6"}, {kind: cluster, name: k3s, version: "1.30.2"}]
      b: [{kind: os, name: debian, version: "12.6"}, {kind: cluster, name: k3s, version: "1.30.2"}]
      w: [{kind: os, name: debian, version: "12.6"}]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from failover.core.topology import Topology

RELEASE_FIELDS = ("version", "components", "site_steps")
SITE_STEP_FIELDS = ("kind", "name", "version")


class ManifestError(ValueError):
    """A release manifest that cannot be used; ``problems`` lists each one, field first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid release manifest: " + "; ".join(problems))


class SiteStepKind(StrEnum):
    """What a site-level step updates. Both take effect on the whole site at once."""

    OS = "os"  # the operating system: the site goes down and comes back up
    CLUSTER = "cluster"  # cluster components (kubelet, container runtime, control plane)


@dataclass(frozen=True)
class SiteStep:
    """One site-level item (``kind`` and ``name``) and the version the release wants."""

    kind: SiteStepKind
    name: str
    version: str

    @property
    def key(self) -> str:
        """The item's name among a site's versions (``current`` of ``plan_update``)."""
        return site_item_key(self.kind, self.name)


def site_item_key(kind: SiteStepKind | str, name: str) -> str:
    """``"os:debian"``: how the runtime reports a site-level item next to component versions."""
    return f"{SiteStepKind(kind).value}:{name}"


@dataclass(frozen=True)
class Release:
    """A parsed release: its name, every component's version, each site's site-level steps.

    ``site_steps`` keeps the manifest's order per site (the operator knows whether the OS
    or the cluster goes first); sites without steps are absent. Treat both mappings as
    read-only.
    """

    version: str
    components: Mapping[str, str]
    site_steps: Mapping[str, tuple[SiteStep, ...]]


def parse_release(doc: Mapping[str, Any], topology: Topology) -> Release:
    """Check a loaded manifest against ``topology``; ManifestError lists every problem."""
    if not isinstance(doc, Mapping):
        raise ManifestError(
            [f"the manifest must be a mapping with 'version' and 'components', got {_kind_of(doc)}"]
        )
    problems: list[str] = []
    for key in doc:
        if key not in RELEASE_FIELDS:
            problems.append(
                f"unknown field {key!r}: a release has only {', '.join(RELEASE_FIELDS)}; "
                "check the spelling"
            )
    version = _version(doc, "version", "version", problems, required=True)
    components = _components(doc.get("components"), topology, problems)
    site_steps = _all_site_steps(doc.get("site_steps", {}), topology, problems)
    if problems:
        raise ManifestError(problems)
    return Release(version=version, components=components, site_steps=site_steps)


def _components(raw: Any, topology: Topology, problems: list[str]) -> dict[str, str]:
    known = ", ".join(topology.components)
    if raw is None:
        problems.append(f"field 'components' is missing: give a version for each of {known}")
        return {}
    if not isinstance(raw, Mapping):
        problems.append(
            f"field 'components' must be a mapping of component -> version, got {_kind_of(raw)}"
        )
        return {}
    result: dict[str, str] = {}
    for name in raw:
        if name not in topology.components:
            problems.append(
                f"field 'components.{name}': unknown component; known components: {known}"
            )
            continue
        result[name] = _version(raw, name, f"components.{name}", problems, required=True)
    missing = [c for c in topology.components if c not in raw]
    if missing:
        problems.append(
            f"field 'components' lacks {', '.join(missing)}: a release names the version of "
            "every component (repeat the current version to leave one as it is)"
        )
    return {c: result[c] for c in topology.components if c in result}


def _all_site_steps(
    raw: Any, topology: Topology, problems: list[str]
) -> dict[str, tuple[SiteStep, ...]]:
    if not isinstance(raw, Mapping):
        problems.append(
            f"field 'site_steps' must be a mapping of site -> list of steps, got {_kind_of(raw)}"
        )
        return {}
    result: dict[str, tuple[SiteStep, ...]] = {}
    for site, steps in raw.items():
        if site not in topology.site_names:
            problems.append(
                f"field 'site_steps.{site}': unknown site; known sites: "
                f"{', '.join(topology.site_names)}"
            )
            continue
        parsed = _site_steps(steps, f"site_steps.{site}", problems)
        if parsed:
            result[site] = parsed
    return {s: result[s] for s in topology.site_names if s in result}


def _site_steps(raw: Any, where: str, problems: list[str]) -> tuple[SiteStep, ...]:
    if not isinstance(raw, list):
        problems.append(
            f"field {where!r} must be a list of {{kind, name, version}}, got {_kind_of(raw)}"
        )
        return ()
    steps: list[SiteStep] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            problems.append(
                f"field {at!r} must be a mapping with kind, name and version, got {_kind_of(item)}"
            )
            continue
        before = len(problems)
        for key in item:
            if key not in SITE_STEP_FIELDS:
                problems.append(
                    f"field '{at}.{key}': unknown; a site step has only "
                    f"{', '.join(SITE_STEP_FIELDS)}"
                )
        kind = item.get("kind")
        kinds = ", ".join(k.value for k in SiteStepKind)
        if not isinstance(kind, str) or kind not in {k.value for k in SiteStepKind}:
            problems.append(f"field '{at}.kind' must be one of {kinds}, got {kind!r}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip() or ":" in name or name != name.strip():
            problems.append(
                f"field '{at}.name' must be a non-empty name without ':' or surrounding "
                f"spaces (e.g. debian, k3s), got {name!r}"
            )
        version = _version(item, "version", f"{at}.version", problems, required=True)
        if len(problems) > before:
            continue
        step = SiteStep(SiteStepKind(str(kind)), str(name), version)
        if step.key in seen:
            problems.append(
                f"field {at!r}: {step.kind.value} {step.name} is listed twice for this site; "
                "keep one entry per item"
            )
            continue
        seen.add(step.key)
        steps.append(step)
    return tuple(steps)


def _version(
    doc: Mapping[Any, Any], key: str, where: str, problems: list[str], *, required: bool
) -> str:
    """A version string; YAML's unquoted ``1.4`` (a float) is named as the likely cause."""
    if key not in doc:
        if required:
            problems.append(f"field {where!r} is missing: give a version string")
        return ""
    value = doc[key]
    if isinstance(value, bool) or value is None:
        problems.append(f"field {where!r} must be a version string, got {value!r}")
        return ""
    if isinstance(value, int | float):
        shown = value if isinstance(value, int) or math.isfinite(value) else str(value)
        problems.append(
            f"field {where!r} must be a version string, got the number {shown!r}; "
            f'quote it in YAML ("{shown}") so 1.10 does not become 1.1'
        )
        return ""
    if not isinstance(value, str):
        problems.append(f"field {where!r} must be a version string, got {_kind_of(value)}")
        return ""
    if not value.strip():
        problems.append(f"field {where!r} is empty: give a version string")
        return ""
    if value != value.strip():
        problems.append(f"field {where!r} has spaces around {value!r}: remove them")
        return ""
    return value


def _kind_of(value: Any) -> str:
    """How a wrong value is named in a message: the YAML/JSON word for its type."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"
