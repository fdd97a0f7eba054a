"""Sites, components and shards: the static shape of the three-site backbone."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_COMPONENTS: tuple[str, ...] = ("backbone", "eep", "eap", "aam", "msm", "gsm")
DEFAULT_SHARDS_PER_COMPONENT = 16


class SiteRole(StrEnum):
    """A worker site runs the backbone; the witness only breaks ties and never owns work."""

    WORKER = "worker"
    WITNESS = "witness"


@dataclass(frozen=True)
class Site:
    """One data-center site. Names are lowercase everywhere (labels, URLs, CLI)."""

    name: str
    role: SiteRole
    weight: float = 1.0


@dataclass(frozen=True)
class ShardRef:
    """One shard of one component's work."""

    component: str
    index: int

    def __str__(self) -> str:
        return f"{self.component}/{self.index}"


@dataclass(frozen=True)
class Topology:
    """The sites, the components and how each component's work is split into shards."""

    sites: tuple[Site, ...]
    components: tuple[str, ...] = DEFAULT_COMPONENTS
    shards_per_component: int = DEFAULT_SHARDS_PER_COMPONENT
    _by_name: dict[str, Site] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [s.name for s in self.sites]
        problems: list[str] = []
        if len(set(names)) != len(names):
            problems.append(f"site names must be unique, got {names}")
        for site in self.sites:
            if not site.name or site.name != site.name.lower() or not site.name.isalnum():
                problems.append(f"site name {site.name!r} must be lowercase letters/digits")
            if site.role is SiteRole.WORKER and not 0 < site.weight < math.inf:
                problems.append(
                    f"site {site.name!r} weight must be a finite number > 0, got {site.weight}"
                )
        if not any(s.role is SiteRole.WORKER for s in self.sites):
            problems.append("at least one worker site is needed")
        if len(set(self.components)) != len(self.components) or not self.components:
            problems.append(
                f"components must be a non-empty list of unique names: {self.components}"
            )
        if self.shards_per_component < 1:
            problems.append(f"shards_per_component must be >= 1, got {self.shards_per_component}")
        if problems:
            raise ValueError("invalid topology: " + "; ".join(problems))
        object.__setattr__(self, "_by_name", {s.name: s for s in self.sites})

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites)

    @property
    def workers(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites if s.role is SiteRole.WORKER)

    @property
    def witnesses(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites if s.role is SiteRole.WITNESS)

    def site(self, name: str) -> Site:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self.site_names)
            raise ValueError(f"unknown site {name!r}; known sites: {known}") from None

    def weight(self, name: str) -> float:
        return self.site(name).weight

    def is_worker(self, name: str) -> bool:
        return name in self._by_name and self._by_name[name].role is SiteRole.WORKER

    def check_component(self, component: str) -> str:
        if component not in self.components:
            known = ", ".join(self.components)
            raise ValueError(f"unknown component {component!r}; known components: {known}")
        return component

    def shards(self, component: str) -> tuple[ShardRef, ...]:
        self.check_component(component)
        return tuple(ShardRef(component, i) for i in range(self.shards_per_component))

    def all_shards(self) -> Iterable[ShardRef]:
        for component in self.components:
            yield from self.shards(component)

    @property
    def majority(self) -> int:
        """Sites needed for a decision: 2 of 3."""
        return len(self.sites) // 2 + 1


def default_topology(
    *,
    shards_per_component: int = DEFAULT_SHARDS_PER_COMPONENT,
    components: tuple[str, ...] = DEFAULT_COMPONENTS,
    weight_a: float = 1.0,
    weight_b: float = 1.0,
) -> Topology:
    """Sites a and b (workers) and w (witness), the six backbone components."""
    return Topology(
        sites=(
            Site("a", SiteRole.WORKER, weight_a),
            Site("b", SiteRole.WORKER, weight_b),
            Site("w", SiteRole.WITNESS, 0.0),
        ),
        components=components,
        shards_per_component=shards_per_component,
    )
