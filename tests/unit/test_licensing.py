"""Licensing state machine: dongle evidence of live sites -> licensed / grace / unlicensed."""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import failover
from failover.core.licensing import (
    DEFAULT_GRACE_S,
    GRACE_KEY,
    DongleEvidence,
    DongleStatus,
    GraceRecord,
    LicenseState,
    LicenseVerdict,
    change_refusal,
    evaluate,
    judge,
    may_change,
)

SITES = ("a", "b", "w")
SYSTEM = "sys-1"
OTHER_SYSTEM = "sys-2"
HOUR_S = 3600.0

times = st.floats(min_value=0, max_value=1e7, allow_nan=False)
grace_periods = st.one_of(st.just(DEFAULT_GRACE_S), st.floats(min_value=0, max_value=1e6))


@st.composite
def evidences(draw: st.DrawFn, site: str) -> DongleEvidence:
    status = draw(st.sampled_from(DongleStatus))
    expires = draw(times) if status is DongleStatus.VALID else draw(st.none() | times)
    return DongleEvidence(
        site=site,
        status=status,
        reason="" if status is DongleStatus.VALID else f"{status.value} for a test",
        system_id=draw(st.sampled_from((SYSTEM, SYSTEM, OTHER_SYSTEM, ""))),
        serial=draw(st.sampled_from(("HSD-1", "HSD-2", ""))),
        features=tuple(draw(st.lists(st.sampled_from(("bfm", "geo")), unique=True))),
        expires_at_wall_s=expires,
    )


@st.composite
def evidence_maps(draw: st.DrawFn) -> dict[str, DongleEvidence]:
    sites = draw(st.lists(st.sampled_from(SITES), unique=True))
    return {site: draw(evidences(site)) for site in sites}


live_sets = st.frozensets(st.sampled_from(SITES))


def _valid(site: str, expires_at_wall_s: float, system_id: str = SYSTEM) -> DongleEvidence:
    return DongleEvidence(
        site,
        DongleStatus.VALID,
        system_id=system_id,
        serial="HSD-1",
        features=("bfm",),
        expires_at_wall_s=expires_at_wall_s,
    )


def _counting(evidence: Mapping[str, DongleEvidence], live: frozenset[str], now: float) -> set[str]:
    """The oracle: which sites license the system, written out from the rule itself."""
    return {
        site
        for site, e in evidence.items()
        if site in live
        and e.status is DongleStatus.VALID
        and e.system_id == SYSTEM
        and e.expires_at_wall_s is not None
        and now < e.expires_at_wall_s
    }


def _evaluate(
    evidence: Mapping[str, DongleEvidence],
    live: frozenset[str],
    *,
    start: float | None,
    now: float,
    grace_s: float = DEFAULT_GRACE_S,
) -> LicenseVerdict:
    return evaluate(
        evidence,
        live,
        system_id=SYSTEM,
        grace_started_at_wall_s=start,
        now_wall_s=now,
        grace_s=grace_s,
    )


# --- one evaluation ----------------------------------------------------------------------


@given(evidence_maps(), live_sets, st.none() | times, times, grace_periods)
def test_licensed_exactly_when_a_live_site_presents_a_current_dongle_for_this_system(
    evidence: dict[str, DongleEvidence],
    live: frozenset[str],
    start: float | None,
    now: float,
    grace_s: float,
) -> None:
    verdict = _evaluate(evidence, live, start=start, now=now, grace_s=grace_s)
    counting = _counting(evidence, live, now)
    assert verdict.licensed_by == tuple(sorted(counting))
    assert (verdict.state is LicenseState.LICENSED) == bool(counting)
    if counting:
        assert verdict.grace_started_at_wall_s is None
        assert verdict.grace_remaining_s == grace_s
        assert verdict.licensed_until_wall_s == max(
            evidence[s].expires_at_wall_s or -1 for s in counting
        )
        assert may_change(verdict)
    else:
        assert verdict.licensed_until_wall_s is None


@given(evidence_maps(), live_sets, st.none() | times, times, grace_periods)
def test_without_a_current_dongle_grace_runs_from_the_stored_start_which_never_moves_forward(
    evidence: dict[str, DongleEvidence],
    live: frozenset[str],
    start: float | None,
    now: float,
    grace_s: float,
) -> None:
    if _counting(evidence, live, now):
        return
    verdict = _evaluate(evidence, live, start=start, now=now, grace_s=grace_s)
    kept = verdict.grace_started_at_wall_s
    assert kept == (now if start is None else min(start, now))
    assert kept <= now
    if start is not None:
        assert kept <= start
    elapsed = now - kept
    assert (verdict.state is LicenseState.UNLICENSED) == (elapsed >= grace_s)
    assert verdict.state in (LicenseState.GRACE, LicenseState.UNLICENSED)
    assert verdict.grace_remaining_s == max(0.0, grace_s - elapsed)
    assert verdict.licensed_by == ()


@given(evidence_maps(), live_sets, st.none() | times, times, st.data())
def test_dongles_of_dead_sites_never_count(
    evidence: dict[str, DongleEvidence],
    live: frozenset[str],
    start: float | None,
    now: float,
    data: st.DataObject,
) -> None:
    with_dead = dict(evidence)
    for site in set(SITES) - live:
        with_dead[site] = _valid(site, expires_at_wall_s=now + data.draw(times) + 1)
    plain = _evaluate(evidence, live, start=start, now=now)
    more = _evaluate(with_dead, live, start=start, now=now)
    assert (more.state, more.licensed_by, more.grace_started_at_wall_s) == (
        plain.state,
        plain.licensed_by,
        plain.grace_started_at_wall_s,
    )
    for site in set(SITES) - live:
        assert f"{site}: site down" in more.reason or more.state is LicenseState.LICENSED


def test_one_live_site_of_three_keeps_the_system_licensed() -> None:
    evidence = {s: _valid(s, expires_at_wall_s=1000.0) for s in SITES}
    evidence["a"] = DongleEvidence("a", DongleStatus.MISSING, "no license file")
    verdict = _evaluate(evidence, frozenset({"a", "w"}), start=None, now=10.0)
    assert verdict.state is LicenseState.LICENSED
    assert verdict.licensed_by == ("w",)
    assert "site w" in verdict.reason


def test_a_dongle_counts_until_the_instant_it_expires() -> None:
    evidence = {"a": _valid("a", expires_at_wall_s=100.0)}
    assert _evaluate(evidence, frozenset("a"), start=None, now=99.999).state is (
        LicenseState.LICENSED
    )
    at_expiry = _evaluate(evidence, frozenset("a"), start=None, now=100.0)
    assert at_expiry.state is LicenseState.GRACE
    assert at_expiry.dongles["a"].status is DongleStatus.EXPIRED
    assert "expired at 1970-01-01T00:01:40Z" in at_expiry.dongles["a"].reason


def test_a_valid_dongle_for_another_system_is_judged_foreign() -> None:
    evidence = {"a": _valid("a", expires_at_wall_s=1e6, system_id=OTHER_SYSTEM)}
    verdict = _evaluate(evidence, frozenset("a"), start=None, now=0.0)
    assert verdict.state is LicenseState.GRACE
    assert verdict.dongles["a"].status is DongleStatus.FOREIGN
    assert OTHER_SYSTEM in verdict.dongles["a"].reason


def test_judge_leaves_a_current_dongle_and_any_invalid_one_alone() -> None:
    valid = _valid("a", expires_at_wall_s=10.0)
    assert judge(valid, system_id=SYSTEM, now_wall_s=9.0) == valid
    tampered = DongleEvidence("a", DongleStatus.TAMPERED, "bad signature")
    assert judge(tampered, system_id=SYSTEM, now_wall_s=9.0) == tampered


def test_a_live_site_that_reports_nothing_shows_as_missing() -> None:
    verdict = _evaluate({}, frozenset({"b"}), start=None, now=0.0)
    assert verdict.dongles["b"].status is DongleStatus.MISSING
    assert "reported no dongle" in verdict.dongles["b"].reason
    assert "b: missing" in verdict.reason


def test_a_stored_start_ahead_of_this_clock_is_moved_back_to_now() -> None:
    verdict = _evaluate({}, frozenset(SITES), start=5000.0, now=1000.0, grace_s=100.0)
    assert verdict.grace_started_at_wall_s == 1000.0
    assert verdict.grace_remaining_s == 100.0


def test_reasons_say_what_is_wrong_and_the_fix() -> None:
    evidence = {"a": DongleEvidence("a", DongleStatus.TAMPERED, "bad signature")}
    grace = _evaluate(evidence, frozenset("ab"), start=0.0, now=HOUR_S, grace_s=3 * HOUR_S)
    assert grace.state is LicenseState.GRACE
    assert "a: tampered; b: missing" in grace.reason
    assert "2.0 h left" in grace.reason
    assert "install a valid license file on a live site" in grace.reason
    gone = _evaluate(evidence, frozenset("a"), start=0.0, now=3 * HOUR_S, grace_s=3 * HOUR_S)
    assert gone.state is LicenseState.UNLICENSED
    assert "alarms still flow" in gone.reason
    assert "install a valid license file on a live site" in gone.reason


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"now_wall_s": math.nan}, "now_wall_s"),
        ({"grace_started_at_wall_s": math.inf}, "grace_started_at_wall_s"),
        ({"grace_s": -1.0}, "grace_s"),
    ],
)
def test_evaluate_refuses_impossible_times(kwargs: dict[str, Any], word: str) -> None:
    args: dict[str, Any] = {"grace_started_at_wall_s": None, "now_wall_s": 0.0, **kwargs}
    with pytest.raises(ValueError, match=word):
        evaluate({}, SITES, system_id=SYSTEM, **args)


def test_evidence_filed_under_another_site_is_refused() -> None:
    with pytest.raises(ValueError, match="evidence of site 'a' was given as site 'b'"):
        evaluate(
            {"b": _valid("a", 10.0)},
            SITES,
            system_id=SYSTEM,
            grace_started_at_wall_s=None,
            now_wall_s=0.0,
        )


def test_a_valid_dongle_must_have_an_expiry() -> None:
    with pytest.raises(ValueError, match="must have an expiry"):
        DongleEvidence("a", DongleStatus.VALID)


# --- over time, across restarts ----------------------------------------------------------


@st.composite
def mostly_valid_evidence_maps(draw: st.DrawFn) -> dict[str, DongleEvidence]:
    """Like ``evidence_maps``, but half the dongles are valid for a long while, so that
    timelines pass through licensed spells as well as grace and unlicensed ones."""
    sites = draw(st.lists(st.sampled_from(SITES), unique=True))
    return {
        site: draw(
            st.builds(_valid, st.just(site), st.floats(min_value=1e6, max_value=1e7))
            | evidences(site)
        )
        for site in sites
    }


steps = st.tuples(
    st.floats(min_value=0, max_value=30 * HOUR_S),  # time passing before this evaluation
    live_sets,
    mostly_valid_evidence_maps(),
    st.booleans(),  # the controller restarts before this evaluation
)


@settings(max_examples=200)
@given(st.lists(steps, min_size=1, max_size=25), st.sampled_from((0.0, HOUR_S, DEFAULT_GRACE_S)))
def test_over_time_grace_only_ends_after_grace_s_without_a_current_dongle_and_restarts_keep_it(
    timeline: list[tuple[float, frozenset[str], dict[str, DongleEvidence], bool]],
    grace_s: float,
) -> None:
    store: dict[str, Any] = {GRACE_KEY: GraceRecord(None).to_doc()}
    now = 0.0
    unlicensed_since: float | None = None  # the oracle: when licensing was last lost
    remaining_before = grace_s
    for elapsed_s, live, evidence, restart in timeline:
        now += elapsed_s
        if restart:  # a new process: only what the store holds survives
            store = json.loads(json.dumps(store))
        start = GraceRecord.from_doc(store[GRACE_KEY]).started_at_wall_s
        verdict = _evaluate(evidence, live, start=start, now=now, grace_s=grace_s)
        store[GRACE_KEY] = verdict.grace_record.to_doc()

        if _counting(evidence, live, now):
            unlicensed_since = None
            expected = LicenseState.LICENSED
        else:
            if unlicensed_since is None:
                unlicensed_since = now
            ran_out = now - unlicensed_since >= grace_s
            expected = LicenseState.UNLICENSED if ran_out else LicenseState.GRACE
            # continuous absence only ever uses grace up, never gives it back
            assert verdict.grace_remaining_s <= remaining_before
        assert verdict.state is expected
        assert verdict.grace_started_at_wall_s == unlicensed_since
        assert may_change(verdict) == (expected is not LicenseState.UNLICENSED)
        remaining_before = verdict.grace_remaining_s


def test_a_restart_without_the_stored_start_would_reset_grace() -> None:
    """The reason the start is stored: forgetting it would hand out a fresh grace period."""
    first = _evaluate({}, frozenset(SITES), start=None, now=0.0, grace_s=100.0)
    stored = first.grace_started_at_wall_s
    kept = _evaluate({}, frozenset(SITES), start=stored, now=100.0, grace_s=100.0)
    forgotten = _evaluate({}, frozenset(SITES), start=None, now=100.0, grace_s=100.0)
    assert kept.state is LicenseState.UNLICENSED
    assert forgotten.state is LicenseState.GRACE


# --- what is refused ---------------------------------------------------------------------


@given(evidence_maps(), live_sets, st.none() | times, times, grace_periods)
def test_only_an_unlicensed_system_refuses_changes_and_says_why(
    evidence: dict[str, DongleEvidence],
    live: frozenset[str],
    start: float | None,
    now: float,
    grace_s: float,
) -> None:
    verdict = _evaluate(evidence, live, start=start, now=now, grace_s=grace_s)
    refusal = change_refusal(verdict, change="the update to 2.4.1")
    assert may_change(verdict) == (verdict.state is not LicenseState.UNLICENSED)
    assert (refusal is None) == may_change(verdict)
    if refusal is not None:
        assert refusal.startswith("the update to 2.4.1 is refused because the system is unlicensed")
        assert "install a valid license file on a live site" in refusal


def test_the_data_path_never_consults_licensing() -> None:
    """Alarms always flow: nothing that carries messages imports the licensing module."""
    root = Path(failover.__file__).parent
    carriers = [*(root / "workload").rglob("*.py")]
    assert carriers, "the workload package moved; point this test at the data path"
    for path in carriers:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            assert not any("licensing" in n or "license_files" in n for n in names), path


# --- stored documents --------------------------------------------------------------------


@given(st.none() | times)
def test_grace_record_round_trips_through_json(start: float | None) -> None:
    doc = json.loads(json.dumps(GraceRecord(start).to_doc()))
    assert GraceRecord.from_doc(doc) == GraceRecord(start)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "object"),
        ({"started_at_wall_s": 1.0}, "'schema'"),
        ({"schema": "bfm.license-grace/1"}, "'started_at_wall_s' is missing"),
        ({"schema": "bfm.license-grace/1", "started_at_wall_s": "1"}, "'started_at_wall_s'"),
        ({"schema": "bfm.license-grace/1", "started_at_wall_s": True}, "'started_at_wall_s'"),
        ({"schema": "bfm.license-grace/1", "started_at_wall_s": math.nan}, "'started_at_wall_s'"),
    ],
)
def test_grace_record_from_doc_names_the_bad_field(doc: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        GraceRecord.from_doc(doc)


@given(st.sampled_from(SITES).flatmap(evidences))
def test_dongle_evidence_round_trips_through_json(evidence: DongleEvidence) -> None:
    doc = json.loads(json.dumps(evidence.to_doc()))
    assert DongleEvidence.from_doc(doc) == evidence


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "lost"}, "'status'"),
        ({"site": 3}, "'site'"),
        ({"features": "bfm"}, "'features'"),
        ({"expires_at_wall_s": None}, "'expires_at_wall_s'"),
        ({"schema": "bfm.dongle-evidence/0"}, "'schema'"),
    ],
)
def test_dongle_evidence_from_doc_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    doc = {**_valid("a", 10.0).to_doc(), **change}
    with pytest.raises(ValueError, match=field):
        DongleEvidence.from_doc(doc)
