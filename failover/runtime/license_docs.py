"""Licensing's documents in the store: what each site's dongle shows, the grace period's
start, and the leader's verdict for readers (``bfm license``, ``bfm update apply``).

- ``license/evidence/<site>``: the site's dongle evidence and when the site read it. A
  site counts as *presenting* its dongle while this is fresher than ``EVIDENCE_FRESH_S``
  (it republishes every few seconds), so a crashed or cut-off site's dongle stops counting
  on its own.
- ``license/grace`` (``failover.core.licensing.GraceRecord``): written by the leader only,
  by compare-and-set, so no restart or leader change resets the grace period.
- ``license/status``: the leader's last verdict, refreshed every few seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from failover.core.licensing import (
    GRACE_KEY,
    DongleEvidence,
    DongleStatus,
    GraceRecord,
    LicenseState,
    LicenseVerdict,
)
from failover.ports import CoordinationStore
from failover.runtime.version_docs import put_doc

EVIDENCE_PREFIX = "license/evidence/"
STATUS_KEY = "license/status"
REPORT_SCHEMA = "bfm.dongle-report/1"
STATUS_SCHEMA = "bfm.license-status/1"
EVIDENCE_FRESH_S = 10.0
"""A site's evidence older than this does not count (the site republishes every 2 s)."""


def evidence_key(site: str) -> str:
    return f"{EVIDENCE_PREFIX}{site}"


@dataclass(frozen=True)
class DongleReport:
    """One site's published evidence, read at ``at_wall_s`` by that site's clock."""

    evidence: DongleEvidence
    at_wall_s: float

    def to_doc(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "at_wall_s": self.at_wall_s,
            "evidence": self.evidence.to_doc(),
        }

    @staticmethod
    def from_doc(doc: Any) -> DongleReport:
        if not isinstance(doc, Mapping) or doc.get("schema") != REPORT_SCHEMA:
            raise ValueError(f"not a dongle report (schema {REPORT_SCHEMA!r})")
        at = doc.get("at_wall_s")
        if not isinstance(at, int | float) or isinstance(at, bool):
            raise ValueError(f"field 'at_wall_s' must be a number, got {at!r}")
        return DongleReport(DongleEvidence.from_doc(doc.get("evidence")), float(at))


def publish_evidence(store: CoordinationStore, report: DongleReport) -> None:
    put_doc(store, evidence_key(report.evidence.site), report.to_doc())


def read_reports(store: CoordinationStore) -> dict[str, DongleReport]:
    """Every site's published evidence; a damaged document reads as a malformed dongle
    report of that site, dated 0 (so it never counts as presented)."""
    reports: dict[str, DongleReport] = {}
    for item in store.list(EVIDENCE_PREFIX):
        site = item.key.removeprefix(EVIDENCE_PREFIX)
        try:
            reports[site] = DongleReport.from_doc(item.value)
        except ValueError as err:
            reason = f"the site's evidence document is damaged ({err}); restart its site process"
            reports[site] = DongleReport(DongleEvidence(site, DongleStatus.MALFORMED, reason), 0.0)
    return reports


def presented(
    reports: Mapping[str, DongleReport], *, now_wall_s: float, fresh_s: float = EVIDENCE_FRESH_S
) -> tuple[dict[str, DongleEvidence], frozenset[str]]:
    """Every site's evidence, and the sites presenting it now (fresh reports)."""
    evidence = {s: r.evidence for s, r in reports.items() if r.evidence.site == s}
    live = frozenset(s for s in evidence if now_wall_s - reports[s].at_wall_s <= fresh_s)
    return evidence, live


def read_grace(store: CoordinationStore) -> tuple[GraceRecord | None, str]:
    """The stored grace record and its revision ((None, "") when none); ValueError when
    damaged."""
    got = store.get(GRACE_KEY)
    if got is None:
        return None, ""
    return GraceRecord.from_doc(got.value), got.revision


@dataclass(frozen=True)
class LicenseStatus:
    """The leader's verdict as readers see it (``license/status``)."""

    state: LicenseState
    reason: str
    system_id: str
    grace_s: float
    grace_remaining_s: float
    grace_started_at_wall_s: float | None
    licensed_until_wall_s: float | None
    licensed_by: tuple[str, ...]
    presenting: tuple[str, ...]  # the sites whose evidence was fresh
    dongles: Mapping[str, DongleEvidence] = field(default_factory=dict)
    leader: str = ""
    at_wall_s: float = 0.0

    @staticmethod
    def of(
        verdict: LicenseVerdict,
        *,
        system_id: str,
        grace_s: float,
        presenting: frozenset[str],
        leader: str,
        at_wall_s: float,
    ) -> LicenseStatus:
        return LicenseStatus(
            state=verdict.state,
            reason=verdict.reason,
            system_id=system_id,
            grace_s=grace_s,
            grace_remaining_s=verdict.grace_remaining_s,
            grace_started_at_wall_s=verdict.grace_started_at_wall_s,
            licensed_until_wall_s=verdict.licensed_until_wall_s,
            licensed_by=verdict.licensed_by,
            presenting=tuple(sorted(presenting)),
            dongles=dict(verdict.dongles),
            leader=leader,
            at_wall_s=at_wall_s,
        )

    def summary(self) -> dict[str, Any]:
        """Who licenses the system and what each dongle is, in one plain mapping (what
        ``bfm status`` shows and the demo records on every change)."""
        return {
            "state": self.state.value,
            "licensed_by": list(self.licensed_by),
            "presenting": list(self.presenting),
            "dongles": {s: e.status.value for s, e in sorted(self.dongles.items())},
        }

    def to_doc(self) -> dict[str, Any]:
        return {
            "schema": STATUS_SCHEMA,
            "state": self.state.value,
            "reason": self.reason,
            "system_id": self.system_id,
            "grace_s": self.grace_s,
            "grace_remaining_s": self.grace_remaining_s,
            "grace_started_at_wall_s": self.grace_started_at_wall_s,
            "licensed_until_wall_s": self.licensed_until_wall_s,
            "licensed_by": list(self.licensed_by),
            "presenting": list(self.presenting),
            "dongles": {s: e.to_doc() for s, e in sorted(self.dongles.items())},
            "leader": self.leader,
            "at_wall_s": self.at_wall_s,
        }

    @staticmethod
    def from_doc(doc: Any) -> LicenseStatus:
        """Read ``to_doc``'s output; anything else raises ValueError naming the problem."""
        if not isinstance(doc, Mapping) or doc.get("schema") != STATUS_SCHEMA:
            raise ValueError(f"not a license status (schema {STATUS_SCHEMA!r})")
        try:
            dongles = {s: DongleEvidence.from_doc(e) for s, e in dict(doc["dongles"]).items()}
            return LicenseStatus(
                state=LicenseState(doc["state"]),
                reason=str(doc["reason"]),
                system_id=str(doc["system_id"]),
                grace_s=float(doc["grace_s"]),
                grace_remaining_s=float(doc["grace_remaining_s"]),
                grace_started_at_wall_s=_optional_float(doc["grace_started_at_wall_s"]),
                licensed_until_wall_s=_optional_float(doc["licensed_until_wall_s"]),
                licensed_by=tuple(str(s) for s in doc["licensed_by"]),
                presenting=tuple(str(s) for s in doc["presenting"]),
                dongles=dongles,
                leader=str(doc["leader"]),
                at_wall_s=float(doc["at_wall_s"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"damaged license status ({err!r})") from None


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def write_status(store: CoordinationStore, status: LicenseStatus) -> None:
    put_doc(store, STATUS_KEY, status.to_doc())


def read_status(store: CoordinationStore) -> LicenseStatus | None:
    """The leader's last verdict (None: no leader has judged the license yet, licensing is
    not configured); ValueError when the document is damaged."""
    got = store.get(STATUS_KEY)
    return LicenseStatus.from_doc(got.value) if got is not None else None


def change_refused(store: CoordinationStore, *, change: str) -> str | None:
    """Why ``change`` (an update, a configuration change) is refused now, or None.

    Refused only when the leader's last verdict is unlicensed. No verdict (licensing not
    configured) or a damaged one (the leader rewrites it within seconds) refuses nothing:
    the verdict gates changes, it must never be what stops an operator by accident."""
    try:
        status = read_status(store)
    except ValueError:
        return None
    if status is None or status.state is not LicenseState.UNLICENSED:
        return None
    return f"{change} is refused because the system is unlicensed: {status.reason}"
