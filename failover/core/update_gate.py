"""The health gate of a rolling update: pass, fail or wait, from what the canary saw.

The runtime measures the updated site's canary over the soak window (readiness of its
components, error ratio and p99 latency of the messages through them) and asks
``gate_verdict`` after each sample, with the soak's start and now as monotonic seconds.
A bad reading fails at once (a broken canary should not keep live traffic for the rest of
the soak); a good one passes only after ``soak_s`` and at least ``min_messages``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 (not a password) undrain fully
    FAIL = "fail"  # roll the site back
    WAIT = "wait"  # sample again later


@dataclass(frozen=True)
class GateBounds:
    """What a healthy canary looks like, and how long to watch it.

    ``min_messages`` keeps a quiet canary (three messages, one error) from being judged
    on noise; when so few messages pass within ``max_wait_s`` (default: four soaks, at
    least two minutes) the gate fails, because an update that could not be judged is not
    known to be good.
    """

    max_error_ratio: float = 0.01
    max_p99_s: float = 0.5
    soak_s: float = 30.0
    min_messages: int = 50
    max_wait_s: float | None = None

    @property
    def wait_limit_s(self) -> float:
        """How long the gate waits for ``min_messages`` before it fails."""
        if self.max_wait_s is not None:
            return self.max_wait_s
        return max(4 * self.soak_s, 120.0)

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.max_error_ratio <= 1:
            problems.append(f"max_error_ratio must be in [0, 1], got {self.max_error_ratio!r}")
        for name in ("max_p99_s", "soak_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a number of seconds >= 0, got {value!r}")
        if self.min_messages < 0:
            problems.append(f"min_messages must be >= 0, got {self.min_messages!r}")
        if self.max_wait_s is not None and not (
            math.isfinite(self.max_wait_s) and self.max_wait_s >= self.soak_s
        ):
            problems.append(
                f"max_wait_s must be at least soak_s ({self.soak_s:g}), got {self.max_wait_s!r}"
            )
        if problems:
            raise ValueError("invalid gate bounds: " + "; ".join(problems))


@dataclass(frozen=True)
class GateSamples:
    """The canary's readings over the soak window so far.

    ``not_ready`` names the site's components that are not ready now (empty: all ready);
    ``error_ratio`` is failed / all messages through the site's components in the window,
    ``p99_s`` their 99th-percentile latency (None before any was measured).
    """

    messages: int
    error_ratio: float
    p99_s: float | None
    not_ready: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.messages < 0:
            raise ValueError(f"messages must be >= 0, got {self.messages!r}")
        if not 0 <= self.error_ratio <= 1:  # also refuses NaN
            raise ValueError(f"error_ratio must be in [0, 1], got {self.error_ratio!r}")
        if self.p99_s is not None and not (math.isfinite(self.p99_s) and self.p99_s >= 0):
            raise ValueError(f"p99_s must be seconds >= 0 or None, got {self.p99_s!r}")


@dataclass(frozen=True)
class GateVerdict:
    verdict: Verdict
    reason: str


def gate_verdict(
    samples: GateSamples, bounds: GateBounds, *, soak_started_s: float, now_s: float
) -> GateVerdict:
    """Judge the canary; the reason is one sentence for ``bfm update status``."""
    elapsed_s = now_s - soak_started_s
    if not (math.isfinite(elapsed_s) and elapsed_s >= 0):
        raise ValueError(
            f"now_s ({now_s!r}) must not be before soak_started_s ({soak_started_s!r})"
        )
    if samples.not_ready:
        return GateVerdict(Verdict.FAIL, f"not ready: {', '.join(samples.not_ready)}")
    judged = samples.messages >= bounds.min_messages
    reading = _reading(samples)
    if judged and samples.error_ratio > bounds.max_error_ratio:
        return GateVerdict(
            Verdict.FAIL,
            f"error ratio {samples.error_ratio:.2%} above the bound "
            f"{bounds.max_error_ratio:.2%} ({reading})",
        )
    if judged and samples.p99_s is not None and samples.p99_s > bounds.max_p99_s:
        return GateVerdict(
            Verdict.FAIL,
            f"p99 latency {samples.p99_s:.3f} s above the bound {bounds.max_p99_s:g} s ({reading})",
        )
    if elapsed_s < bounds.soak_s:
        return GateVerdict(
            Verdict.WAIT, f"soaking: {elapsed_s:.1f} of {bounds.soak_s:g} s ({reading})"
        )
    if not judged:
        if elapsed_s >= bounds.wait_limit_s:
            return GateVerdict(
                Verdict.FAIL,
                f"only {samples.messages} message(s) through the canary in {elapsed_s:.1f} s; "
                f"the gate needs {bounds.min_messages} to judge it",
            )
        return GateVerdict(
            Verdict.WAIT,
            f"waiting for traffic: {samples.messages} of {bounds.min_messages} message(s) "
            f"after {elapsed_s:.1f} s",
        )
    return GateVerdict(
        Verdict.PASS, f"healthy for {elapsed_s:.1f} s (soak {bounds.soak_s:g} s; {reading})"
    )


def _reading(samples: GateSamples) -> str:
    p99 = "no latency yet" if samples.p99_s is None else f"p99 {samples.p99_s:.3f} s"
    return f"{samples.messages} message(s), errors {samples.error_ratio:.2%}, {p99}"
