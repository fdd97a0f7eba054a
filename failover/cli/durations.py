"""Durations and points in time as operators type them: ``15``, ``1.5``, ``15s``, ``5m``, ``2h``.

Accepted durations (never negative):

- a bare number of seconds: ``15``, ``1.5``, ``.5``;
- a number with a unit, ``ms``, ``s``, ``m``, ``h`` or ``d``: ``500ms``, ``15s``, ``5m``,
  ``2h``, ``1d``, ``1.5h``;
- units combined from largest to smallest, each at most once: ``1h30m``, ``2m30s``.

Units are lowercase only (``5M`` is refused rather than guessed). No signs, exponents,
``inf`` or ``nan``. A point in time is an RFC 3339 timestamp with a UTC offset
(``2024-05-01T12:00:00Z``, ``2024-05-01 14:00:00.25+02:00``) or a duration meaning
"that long ago". Arithmetic is decimal, so ``0.1s`` is exactly the float ``0.1``.

Bad input raises :class:`failover.cli.errors.UsageError` (exit 2) naming the text and the
accepted forms. ``duration_option`` and ``point_in_time_option`` plug the parsers into
typer options (a bad value then exits 2 naming the option)::

    hold_off_s: Annotated[
        float, typer.Option("--hold-off", parser=duration_option, metavar="DURATION")
    ] = 30.0
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import typer

from failover.cli.errors import UsageError

DURATION_FORMS = (
    "a number of seconds (15, 1.5) or a number with a unit ms, s, m, h or d "
    "(500ms, 15s, 5m, 2h), units combined largest first (1h30m)"
)
TIMESTAMP_FORMS = "an RFC 3339 timestamp with a UTC offset (2024-05-01T12:00:00Z)"

_UNIT_S: dict[str, Decimal] = {
    "d": Decimal(86400),
    "h": Decimal(3600),
    "m": Decimal(60),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_BARE_SECONDS = re.compile(rf"(?P<n>{_NUMBER})")
_WITH_UNITS = re.compile(
    "".join(rf"(?:(?P<{unit}>{_NUMBER}){unit})?" for unit in ("d", "h", "m", "s", "ms"))
)
_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2})"
    r"(?P<frac>\.\d+)?(?P<offset>[Zz]|[+-]\d{2}:\d{2})"
)
_TIMESTAMP_WITHOUT_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?")


def parse_duration_s(text: str) -> float:
    """Seconds meant by ``text`` (see the module docstring); ``UsageError`` when unclear."""
    stripped = text.strip()
    bare = _BARE_SECONDS.fullmatch(stripped)
    if bare is not None:
        return _finite_s(text, Decimal(bare["n"]))
    parts = _WITH_UNITS.fullmatch(stripped)
    if not stripped or parts is None:
        raise UsageError(f"{text!r} is not a duration; use {DURATION_FORMS}.")
    total = sum(
        (Decimal(number) * _UNIT_S[unit] for unit, number in parts.groupdict().items() if number),
        start=Decimal(0),
    )
    return _finite_s(text, total)


def _finite_s(text: str, seconds: Decimal) -> float:
    as_float = float(seconds)
    if as_float == float("inf"):
        raise UsageError(f"{text!r} is too long to be a duration in seconds.")
    return as_float


def format_duration_s(seconds: float) -> str:
    """``seconds`` rounded to the millisecond, in the form ``parse_duration_s`` reads back.

    ``90.5`` -> ``"1m30s500ms"``, ``0`` -> ``"0s"``. Negative or non-finite values are a
    programming error (``ValueError``).
    """
    if not (0 <= seconds < float("inf")):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    remaining_ms = int((Decimal(seconds) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    parts: list[str] = []
    for unit, unit_s in _UNIT_S.items():
        unit_ms = int(unit_s * 1000)
        count, remaining_ms = divmod(remaining_ms, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def parse_point_in_time(text: str, *, now_wall_s: float) -> float:
    """Unix seconds meant by ``text``: RFC 3339, or a duration counted back from ``now_wall_s``."""
    stripped = text.strip()
    stamp = _RFC3339.fullmatch(stripped)
    if stamp is not None:
        return _rfc3339_to_unix_s(text, stamp)
    if _TIMESTAMP_WITHOUT_OFFSET.fullmatch(stripped):
        raise UsageError(
            f"{text!r} has no UTC offset; add one, as in 2024-05-01T12:00:00Z or "
            "2024-05-01T14:00:00+02:00."
        )
    try:
        return now_wall_s - parse_duration_s(stripped)
    except UsageError:
        raise UsageError(
            f"{text!r} is not a point in time; use {TIMESTAMP_FORMS} or a duration meaning "
            "that long ago (15, 90s, 5m, 2h)."
        ) from None


def _rfc3339_to_unix_s(text: str, stamp: re.Match[str]) -> float:
    # datetime refuses second 60; RFC 3339 allows it for a leap second, which we fold
    # into the next second as POSIX time does.
    second = int(stamp["s"])
    leap_s = 1 if second == 60 else 0
    offset = stamp["offset"].upper()
    try:
        if offset == "Z":
            zone = UTC
        else:
            sign = -1 if offset[0] == "-" else 1
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            if hours > 23 or minutes > 59:
                raise ValueError(f"UTC offset {offset} is out of range")
            zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
        moment = datetime.fromisoformat(stamp["date"]).replace(
            hour=int(stamp["h"]), minute=int(stamp["m"]), second=second - leap_s, tzinfo=zone
        )
    except ValueError:
        raise UsageError(f"{text!r} is not a valid date and time; use {TIMESTAMP_FORMS}.") from None
    whole_s = Decimal(int(moment.timestamp()) + leap_s)
    return float(whole_s + Decimal(stamp["frac"] or "0"))


def duration_option(value: str | float) -> float:
    """A typer ``parser=`` for duration options; a number (a typed default) is seconds."""
    if not isinstance(value, str):
        return float(value)
    try:
        return parse_duration_s(value)
    except UsageError as error:
        raise typer.BadParameter(str(error)) from None


def point_in_time_option(value: str | float) -> float:
    """A typer ``parser=`` for point-in-time options, relative to the wall clock now.

    A number is taken as Unix seconds already (a value may be converted twice), so give a
    relative default as text: ``= "15m"``.
    """
    if not isinstance(value, str):
        return float(value)
    try:
        # Wall time is right here: the result is a timestamp, not a measured duration.
        return parse_point_in_time(value, now_wall_s=time.time())
    except UsageError as error:
        raise typer.BadParameter(str(error)) from None
