"""Topology: the default three-site shape, validation that names the problem, lookups."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.core.topology import (
    DEFAULT_COMPONENTS,
    DEFAULT_SHARDS_PER_COMPONENT,
    ShardRef,
    Site,
    SiteRole,
    Topology,
    default_topology,
)


def test_default_topology_has_two_workers_and_a_witness() -> None:
    topo = default_topology()
    assert topo.site_names == ("a", "b", "w")
    assert topo.workers == ("a", "b")
    assert topo.witnesses == ("w",)
    assert topo.site("w").role is SiteRole.WITNESS
    assert topo.is_worker("a")
    assert topo.is_worker("b")
    assert not topo.is_worker("w")
    assert not topo.is_worker("nosuchsite")


def test_default_topology_has_six_components_of_sixteen_shards() -> None:
    topo = default_topology()
    assert topo.components == ("backbone", "eep", "eap", "aam", "msm", "gsm")
    assert topo.components == DEFAULT_COMPONENTS
    assert DEFAULT_SHARDS_PER_COMPONENT == 16
    assert topo.shards_per_component == 16
    assert topo.shards("eep") == tuple(ShardRef("eep", i) for i in range(16))
    assert len(list(topo.all_shards())) == 6 * 16
    assert str(ShardRef("eep", 3)) == "eep/3"


@given(
    shards=st.integers(min_value=1, max_value=64),
    weight_a=st.floats(min_value=0.1, max_value=10),
    weight_b=st.floats(min_value=0.1, max_value=10),
)
@settings(max_examples=30)
def test_default_topology_is_configurable(shards: int, weight_a: float, weight_b: float) -> None:
    topo = default_topology(
        shards_per_component=shards,
        components=("eep", "gsm"),
        weight_a=weight_a,
        weight_b=weight_b,
    )
    assert topo.shards_per_component == shards
    assert topo.components == ("eep", "gsm")
    assert topo.weight("a") == weight_a
    assert topo.weight("b") == weight_b
    assert [str(s) for s in topo.all_shards()] == [
        f"{c}/{i}" for c in ("eep", "gsm") for i in range(shards)
    ]


def test_witness_is_never_a_worker_even_with_a_weight() -> None:
    topo = Topology(sites=(Site("a", SiteRole.WORKER), Site("w", SiteRole.WITNESS, 5.0)))
    assert topo.workers == ("a",)
    assert not topo.is_worker("w")


def test_witness_may_have_zero_weight() -> None:
    assert default_topology().weight("w") == 0.0


def _sites(*names: str) -> tuple[Site, ...]:
    return tuple(Site(n, SiteRole.WORKER) for n in names)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sites": _sites("a", "a")}, "site names must be unique"),
        ({"sites": _sites("A", "b")}, "site name 'A' must be lowercase letters/digits"),
        ({"sites": _sites("", "b")}, "site name '' must be lowercase letters/digits"),
        ({"sites": _sites("site-a", "b")}, "site name 'site-a' must be lowercase"),
        ({"sites": (Site("w", SiteRole.WITNESS),)}, "at least one worker site is needed"),
        ({"sites": ()}, "at least one worker site is needed"),
        (
            {"sites": (Site("a", SiteRole.WORKER, 0.0),)},
            "site 'a' weight must be a finite number > 0, got 0.0",
        ),
        (
            {"sites": (Site("a", SiteRole.WORKER, -1.0),)},
            "site 'a' weight must be a finite number > 0, got -1.0",
        ),
        (
            {"sites": (Site("a", SiteRole.WORKER, float("nan")),)},
            "site 'a' weight must be a finite number > 0, got nan",
        ),
        (
            {"sites": (Site("a", SiteRole.WORKER, float("inf")),)},
            "site 'a' weight must be a finite number > 0, got inf",
        ),
        (
            {"sites": (Site("a", SiteRole.WORKER, float("-inf")),)},
            "site 'a' weight must be a finite number > 0, got -inf",
        ),
        ({"sites": _sites("a"), "shards_per_component": 0}, "shards_per_component must be >= 1"),
        ({"sites": _sites("a"), "shards_per_component": -3}, "got -3"),
        ({"sites": _sites("a"), "components": ()}, "components must be a non-empty list"),
        ({"sites": _sites("a"), "components": ("eep", "eep")}, "unique names"),
    ],
)
def test_invalid_topology_is_a_clear_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid topology: ") as err:
        Topology(**kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_infinite_weight_is_rejected() -> None:
    # An infinite weight used to pass and then broke quotas() with a NaN conversion error.
    with pytest.raises(ValueError, match=r"^invalid topology: site 'a' weight must be a finite"):
        Topology(sites=(Site("a", SiteRole.WORKER, float("inf")), Site("b", SiteRole.WORKER)))


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as err:
        Topology(sites=(Site("A", SiteRole.WITNESS),), shards_per_component=0)
    text = str(err.value)
    assert "site name 'A'" in text
    assert "at least one worker site is needed" in text
    assert "shards_per_component must be >= 1, got 0" in text


def test_unknown_site_error_names_the_known_sites() -> None:
    topo = default_topology()
    with pytest.raises(ValueError, match=r"^unknown site 'c'; known sites: a, b, w$"):
        topo.site("c")
    with pytest.raises(ValueError, match="known sites: a, b, w"):
        topo.weight("c")


def test_unknown_component_error_names_the_known_components() -> None:
    topo = default_topology()
    expected = "unknown component 'vms'; known components: backbone, eep, eap, aam, msm, gsm"
    with pytest.raises(ValueError) as err:
        topo.shards("vms")
    assert str(err.value) == expected
    assert topo.check_component("eep") == "eep"


def test_majority_is_two_of_three() -> None:
    assert default_topology().majority == 2


@pytest.mark.parametrize(("site_count", "majority"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_majority_is_more_than_half(site_count: int, majority: int) -> None:
    names = [f"s{i}" for i in range(site_count)]
    assert Topology(sites=_sites(*names)).majority == majority
