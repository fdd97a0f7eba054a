"""Licensing that survives a site: dongle evidence per site -> licensed / grace / unlicensed.

The HEMISPHERE site dongle is cloned to all three sites. Each site presents what it holds
as ``DongleEvidence`` (an adapter reads and verifies it); ``evaluate`` decides the system's
``LicenseState`` from the evidence of the live sites, the wall time and the stored start of
the grace period. The start is an input and an output, kept in the store under
``GRACE_KEY``, so no restart or leader change resets the grace period.

Licensing gates only changes (``may_change``): updates and configuration changes are
refused when unlicensed. The data path never consults it, so alarms always flow.
Pure: wall time is passed in as seconds since the epoch; nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

GRACE_KEY = "license/grace"
GRACE_SCHEMA = "bfm.license-grace/1"
EVIDENCE_SCHEMA = "bfm.dongle-evidence/1"
DEFAULT_GRACE_S = 72 * 3600.0


class LicenseState(StrEnum):
    LICENSED = "licensed"  # a live site presents a valid dongle
    GRACE = "grace"  # none does, for less than grace_s: everything still works
    UNLICENSED = "unlicensed"  # none has for grace_s: changes refused, alarms still flow


class DongleStatus(StrEnum):
    VALID = "valid"
    MISSING = "missing"  # no dongle presented (no file, unreadable, no report from the site)
    EXPIRED = "expired"
    TAMPERED = "tampered"  # the signature does not verify with the configured public key
    FOREIGN = "foreign"  # signed, but for another system id (or bound to another site)
    MALFORMED = "malformed"  # not a license at all, or a field is wrong


@dataclass(frozen=True)
class DongleEvidence:
    """What one site presents. ``reason`` says what is wrong (and the fix) unless valid.

    The other fields are filled only from a verified signature: a tampered or malformed
    dongle carries none of them. A valid dongle always has an expiry.
    """

    site: str
    status: DongleStatus
    reason: str = ""
    system_id: str = ""
    serial: str = ""
    features: tuple[str, ...] = ()
    expires_at_wall_s: float | None = None

    def __post_init__(self) -> None:
        if self.expires_at_wall_s is not None and not math.isfinite(self.expires_at_wall_s):
            raise ValueError(f"expires_at_wall_s must be finite, got {self.expires_at_wall_s!r}")
        if self.status is DongleStatus.VALID and self.expires_at_wall_s is None:
            raise ValueError(f"a valid dongle at site {self.site!r} must have an expiry")

    def to_doc(self) -> dict[str, Any]:
        """A plain JSON-able document (schema ``bfm.dongle-evidence/1``)."""
        return {
            "schema": EVIDENCE_SCHEMA,
            "site": self.site,
            "status": self.status.value,
            "reason": self.reason,
            "system_id": self.system_id,
            "serial": self.serial,
            "features": list(self.features),
            "expires_at_wall_s": self.expires_at_wall_s,
        }

    @staticmethod
    def from_doc(doc: Any) -> DongleEvidence:
        """Read ``to_doc``'s output back; anything else raises ValueError naming the field."""
        _check_schema(doc, EVIDENCE_SCHEMA, "dongle evidence")
        site, reason, system_id, serial = (
            _string(doc, name) for name in ("site", "reason", "system_id", "serial")
        )
        status = doc.get("status")
        if not isinstance(status, str) or status not in {s.value for s in DongleStatus}:
            names = ", ".join(s.value for s in DongleStatus)
            raise ValueError(f"field 'status' must be one of {names}, got {status!r}")
        features = doc.get("features")
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ValueError(f"field 'features' must be a list of strings, got {features!r}")
        expires = _optional_wall_s(doc, "expires_at_wall_s")
        if status == DongleStatus.VALID and expires is None:
            raise ValueError("field 'expires_at_wall_s' must be a number for a valid dongle")
        return DongleEvidence(
            site=site,
            status=DongleStatus(status),
            reason=reason,
            system_id=system_id,
            serial=serial,
            features=tuple(features),
            expires_at_wall_s=expires,
        )


@dataclass(frozen=True)
class GraceRecord:
    """The stored start of the grace period (None: not in grace). Lives at ``GRACE_KEY``."""

    started_at_wall_s: float | None

    def to_doc(self) -> dict[str, Any]:
        return {"schema": GRACE_SCHEMA, "started_at_wall_s": self.started_at_wall_s}

    @staticmethod
    def from_doc(doc: Any) -> GraceRecord:
        """Read ``to_doc``'s output back; anything else raises ValueError naming the field."""
        _check_schema(doc, GRACE_SCHEMA, "license grace record")
        return GraceRecord(_optional_wall_s(doc, "started_at_wall_s"))


@dataclass(frozen=True)
class LicenseVerdict:
    """The system's license state at one instant, and what to store for the next.

    ``licensed_by``: the live sites whose dongle is valid now (sorted). ``dongles``: every
    site's evidence as judged at that instant (a valid dongle past its expiry reads as
    expired; dead sites keep their evidence, which does not count). ``grace_remaining_s``:
    a whole ``grace_s`` while licensed, what is left in grace, 0 when unlicensed.
    ``grace_started_at_wall_s``: the value to store (``GraceRecord``), None while licensed.
    ``licensed_until_wall_s``: the latest expiry among ``licensed_by`` (None unless licensed).
    """

    state: LicenseState
    licensed_by: tuple[str, ...]
    grace_remaining_s: float
    grace_started_at_wall_s: float | None
    licensed_until_wall_s: float | None
    dongles: Mapping[str, DongleEvidence]
    reason: str

    @property
    def grace_record(self) -> GraceRecord:
        return GraceRecord(self.grace_started_at_wall_s)


def judge(evidence: DongleEvidence, *, system_id: str, now_wall_s: float) -> DongleEvidence:
    """The evidence as it stands at ``now_wall_s``: a dongle that was valid when read but
    has expired since, or is for another system id, is no longer valid."""
    if evidence.status is not DongleStatus.VALID:
        return evidence
    if evidence.system_id != system_id:
        return replace(
            evidence,
            status=DongleStatus.FOREIGN,
            reason=(
                f"the dongle is for system {evidence.system_id!r}, this system is "
                f"{system_id!r}; install this system's license file"
            ),
        )
    assert evidence.expires_at_wall_s is not None  # a valid dongle has one (__post_init__)
    if now_wall_s >= evidence.expires_at_wall_s:
        return replace(
            evidence,
            status=DongleStatus.EXPIRED,
            reason=(
                f"the dongle expired at {rfc3339(evidence.expires_at_wall_s)}; "
                "install a renewed license file"
            ),
        )
    return evidence


def evaluate(
    evidence_by_site: Mapping[str, DongleEvidence],
    live_sites: Iterable[str],
    *,
    system_id: str,
    grace_started_at_wall_s: float | None,
    now_wall_s: float,
    grace_s: float = DEFAULT_GRACE_S,
) -> LicenseVerdict:
    """Licensed while at least one live site presents a valid dongle for ``system_id``
    that has not expired at ``now_wall_s``; otherwise in grace from the stored start (or
    from now when none is stored), and unlicensed once ``grace_s`` has passed since it.

    A stored start later than now (another controller's clock ran ahead) is moved back to
    now: the start never moves forward, so no clock or restart lengthens the grace period.
    """
    _check_wall_s("now_wall_s", now_wall_s)
    if grace_started_at_wall_s is not None:
        _check_wall_s("grace_started_at_wall_s", grace_started_at_wall_s)
    if not (math.isfinite(grace_s) and grace_s >= 0):
        raise ValueError(f"grace_s must be a number of seconds >= 0, got {grace_s!r}")
    for site, evidence in evidence_by_site.items():
        if evidence.site != site:
            raise ValueError(f"evidence of site {evidence.site!r} was given as site {site!r}")
    live = frozenset(live_sites)
    dongles: dict[str, DongleEvidence] = {}
    for site in sorted(live | evidence_by_site.keys()):
        given = evidence_by_site.get(site)
        if given is None:
            given = DongleEvidence(
                site,
                DongleStatus.MISSING,
                f"site {site!r} reported no dongle; check its license file and its agent",
            )
        dongles[site] = judge(given, system_id=system_id, now_wall_s=now_wall_s)
    licensed_by = tuple(s for s in sorted(live) if dongles[s].status is DongleStatus.VALID)
    if licensed_by:
        until = max(_expiry(dongles[s]) for s in licensed_by)
        return LicenseVerdict(
            state=LicenseState.LICENSED,
            licensed_by=licensed_by,
            grace_remaining_s=grace_s,
            grace_started_at_wall_s=None,
            licensed_until_wall_s=until,
            dongles=dongles,
            reason=(
                f"licensed by the dongle at {_sites(licensed_by)} (valid until {rfc3339(until)})"
            ),
        )
    started = now_wall_s if grace_started_at_wall_s is None else grace_started_at_wall_s
    started = min(started, now_wall_s)
    remaining_s = max(0.0, grace_s - (now_wall_s - started))
    seen = "; ".join(
        f"{s}: {dongles[s].status.value if s in live else 'site down'}" for s in dongles
    )
    why = f"no live site presents a valid dongle for system {system_id!r} ({seen or 'no sites'})"
    fix = "install a valid license file on a live site"
    if remaining_s > 0:
        state = LicenseState.GRACE
        reason = (
            f"{why}; grace ends at {rfc3339(started + grace_s)} "
            f"({remaining_s / 3600:.1f} h left), then updates and configuration changes "
            f"are refused: {fix}"
        )
    else:
        state = LicenseState.UNLICENSED
        reason = (
            f"{why}, and the grace period ended at {rfc3339(started + grace_s)}: updates "
            f"and configuration changes are refused (alarms still flow) until you {fix}"
        )
    return LicenseVerdict(
        state=state,
        licensed_by=(),
        grace_remaining_s=remaining_s,
        grace_started_at_wall_s=started,
        licensed_until_wall_s=None,
        dongles=dongles,
        reason=reason,
    )


def may_change(verdict: LicenseVerdict) -> bool:
    """Whether updates and configuration changes are allowed (in grace they still are)."""
    return verdict.state is not LicenseState.UNLICENSED


def change_refusal(verdict: LicenseVerdict, *, change: str) -> str | None:
    """Why ``change`` (e.g. "the update to 2.4.1") is refused, or None when it may go ahead.

    Only changes ask this; alarms, events and every other message never do.
    """
    if may_change(verdict):
        return None
    return f"{change} is refused because the system is unlicensed: {verdict.reason}"


def rfc3339(wall_s: float) -> str:
    """``wall_s`` as an RFC 3339 UTC timestamp (whole seconds unless it has a fraction)."""
    try:
        moment = datetime.fromtimestamp(wall_s, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"{wall_s:.0f} s after the epoch"
    spec = "seconds" if float(wall_s).is_integer() else "microseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _sites(sites: tuple[str, ...]) -> str:
    return ("site " if len(sites) == 1 else "sites ") + ", ".join(sites)


def _expiry(evidence: DongleEvidence) -> float:
    assert evidence.expires_at_wall_s is not None  # only called for valid dongles
    return evidence.expires_at_wall_s


def _check_wall_s(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of wall seconds, got {value!r}")


def _check_schema(doc: Any, schema: str, what: str) -> None:
    if not isinstance(doc, Mapping):
        raise ValueError(f"a {what} must be an object, got {type(doc).__name__}")
    if doc.get("schema") != schema:
        raise ValueError(
            f"field 'schema' is {doc.get('schema')!r}, expected {schema!r}: written by "
            f"another version of bfm, or not a {what}"
        )


def _string(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, got {value!r}")
    return value


def _optional_wall_s(doc: Mapping[str, Any], name: str) -> float | None:
    if name not in doc:
        raise ValueError(f"field {name!r} is missing")
    value = doc[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"field {name!r} must be a finite number or null, got {value!r}")
    return float(value)
