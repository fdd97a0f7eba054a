"""Licensing at run time: each site publishes what its dongle shows; the leading
controller judges the system's license from that, keeps the grace period's start in the
store and exports the license metrics.

``DonglePublisher`` runs in every site process (the witness too: it holds a clone of
the dongle). ``LicenseKeeper`` runs in the leading controller replica only; a replica that
stops leading calls ``stop_leading`` and its license series disappear. Nothing here is on
the data path: alarms never wait for, or ask, the license.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from prometheus_client import Gauge

from failover import telemetry
from failover.core.licensing import (
    DEFAULT_GRACE_S,
    GRACE_KEY,
    DongleEvidence,
    DongleStatus,
    GraceRecord,
    LicenseState,
    LicenseVerdict,
    evaluate,
)
from failover.ports import Clock, Conflict, CoordinationStore, Dongle
from failover.runtime.controller_metrics import COMPONENT_LABEL
from failover.runtime.license_docs import (
    EVIDENCE_FRESH_S,
    DongleReport,
    LicenseStatus,
    presented,
    publish_evidence,
    read_grace,
    read_reports,
    write_status,
)

log = logging.getLogger("bfm.license")

REPUBLISH_EVERY_S = 2.0  # a site's evidence is rewritten at least this often
STATUS_EVERY_S = 5.0  # the leader's verdict is rewritten at least this often


@dataclass(frozen=True)
class LicensePolicy:
    """What the system is licensed as: its id, and how long it stays in grace."""

    system_id: str
    grace_s: float = DEFAULT_GRACE_S
    evidence_fresh_s: float = EVIDENCE_FRESH_S


class DonglePublisher:
    """Reads this site's dongle and publishes the evidence (on change, else every 2 s)."""

    def __init__(
        self, store: CoordinationStore, dongle: Dongle, *, site: str, clock: Clock
    ) -> None:
        self.store, self.dongle, self.site, self.clock = store, dongle, site, clock
        self._last: DongleEvidence | None = None
        self._last_at_s = 0.0

    def tick(self) -> None:
        now_s, now_wall_s = self.clock.monotonic(), self.clock.wall()
        evidence = self.dongle.read(now_wall_s)
        changed = evidence != self._last
        if not changed and now_s - self._last_at_s < REPUBLISH_EVERY_S:
            return
        publish_evidence(self.store, DongleReport(evidence, now_wall_s))
        if changed:
            ok = evidence.status is DongleStatus.VALID
            log.log(
                logging.INFO if ok else logging.WARNING,
                f"site {self.site} dongle {evidence.status.value}"
                + (f" (serial {evidence.serial})" if ok else f": {evidence.reason}"),
                extra={"event": "dongle", "site": self.site, "status": evidence.status.value},
            )
        self._last, self._last_at_s = evidence, now_s


class LicenseKeeper:
    """The leader's side: one verdict per tick, the grace start kept by compare-and-set."""

    def __init__(
        self, store: CoordinationStore, policy: LicensePolicy, *, site: str, clock: Clock
    ) -> None:
        self.store, self.policy, self.site, self.clock = store, policy, site, clock
        self.verdict: LicenseVerdict | None = None
        self._status_at_s: float | None = None
        self._status_key: tuple[object, ...] = ()
        self._series: set[tuple[Gauge, tuple[str, ...]]] = set()

    def tick(self) -> LicenseVerdict | None:
        """Judge the license now; None when another writer changed the grace record in
        between (the next tick judges again)."""
        now_s, now_wall_s = self.clock.monotonic(), self.clock.wall()
        evidence, live = presented(
            read_reports(self.store), now_wall_s=now_wall_s, fresh_s=self.policy.evidence_fresh_s
        )
        stored, revision = self._grace()
        verdict = evaluate(
            evidence,
            live,
            system_id=self.policy.system_id,
            grace_started_at_wall_s=stored.started_at_wall_s if stored else None,
            now_wall_s=now_wall_s,
            grace_s=self.policy.grace_s,
        )
        if stored is None or verdict.grace_record != stored:
            try:
                doc = verdict.grace_record.to_doc()
                if revision:
                    self.store.compare_and_set(GRACE_KEY, doc, expected_revision=revision)
                else:
                    self.store.create(GRACE_KEY, doc)
            except Conflict:
                return None
        self._announce(verdict)
        self._publish(verdict, live, now_s=now_s, now_wall_s=now_wall_s)
        self._export(verdict)
        self.verdict = verdict
        return verdict

    def _grace(self) -> tuple[GraceRecord | None, str]:
        try:
            return read_grace(self.store)
        except ValueError as err:
            got = self.store.get(GRACE_KEY)
            log.error(
                f"the stored grace record is damaged ({err}); it is replaced, and the grace "
                "period counts from now if no live site presents a valid dongle",
                extra={"event": "license_grace_damaged"},
            )
            return None, got.revision if got is not None else ""

    def _announce(self, verdict: LicenseVerdict) -> None:
        before = self.verdict.state if self.verdict is not None else None
        if verdict.state is before:
            return
        level = {
            LicenseState.LICENSED: logging.INFO,
            LicenseState.GRACE: logging.WARNING,
            LicenseState.UNLICENSED: logging.ERROR,
        }[verdict.state]
        log.log(
            level,
            f"license {verdict.state.value}: {verdict.reason}",
            extra={"event": "license", "state": verdict.state.value},
        )

    def _publish(
        self, verdict: LicenseVerdict, live: frozenset[str], *, now_s: float, now_wall_s: float
    ) -> None:
        key = (
            verdict.state,
            verdict.licensed_by,
            live,
            tuple((s, e.status) for s, e in sorted(verdict.dongles.items())),
        )
        due = self._status_at_s is None or now_s - self._status_at_s >= STATUS_EVERY_S
        if key == self._status_key and not due:
            return
        status = LicenseStatus.of(
            verdict,
            system_id=self.policy.system_id,
            grace_s=self.policy.grace_s,
            presenting=live,
            leader=self.site,
            at_wall_s=now_wall_s,
        )
        write_status(self.store, status)
        self._status_key, self._status_at_s = key, now_s

    def _export(self, verdict: LicenseVerdict) -> None:
        me = (self.site, COMPONENT_LABEL)
        for state in LicenseState:
            self._set(telemetry.LICENSE_STATE, (*me, state.value), state is verdict.state)
        self._set(telemetry.LICENSE_GRACE_REMAINING_SECONDS, me, verdict.grace_remaining_s)
        for site, evidence in verdict.dongles.items():
            labels = (site, COMPONENT_LABEL)
            valid = site in verdict.licensed_by
            self._set(telemetry.LICENSE_DONGLE_VALID, labels, valid)
            for status in DongleStatus:
                self._set(
                    telemetry.LICENSE_DONGLE_STATUS,
                    (*labels, status.value),
                    status is evidence.status,
                )
            if evidence.expires_at_wall_s is not None:
                self._set(telemetry.LICENSE_DONGLE_EXPIRY, labels, evidence.expires_at_wall_s)
            else:
                self._remove(telemetry.LICENSE_DONGLE_EXPIRY, labels)

    def _set(self, gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
        gauge.labels(*labels).set(float(value))
        self._series.add((gauge, labels))

    def _remove(self, gauge: Gauge, labels: tuple[str, ...]) -> None:
        if (gauge, labels) in self._series:
            self._series.discard((gauge, labels))
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def stop_leading(self) -> None:
        """Another replica leads now: remove this one's license series."""
        for gauge, labels in list(self._series):
            self._remove(gauge, labels)
        self.verdict = None
        self._status_at_s, self._status_key = None, ()
