"""What a site may serve right now, published for the components on the same host.

The site agent writes ``grants-<site>.json`` (atomically, every poll) naming each shard it
may serve with its epoch, and the moment its right to serve ends, on the host's monotonic
clock (``CLOCK_MONOTONIC`` is shared by every process of one host). The router and the
modules read it: work is admitted only under a published grant and only until then. If
the agent stops (crash, pause), the file stops being renewed and the grants run out by
themselves: the self-fence reaches every process of the site.

``decisions`` names, per component, the decision that wrote the ownership document the
grants come from (its W3C ``traceparent``): the router and modules link the spans of work
they handle under a new epoch to it (ARCHITECTURE.md section 5).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failover.adapters.files import write_text_atomically
from failover.core.fencing import Ownership

_HEX = frozenset("0123456789abcdef")


def decision_traceparent(ownership: Ownership) -> str:
    """The ``traceparent`` of the decision that wrote ``ownership`` ("" when the document
    names none: written before decisions were traced, or by the simulation)."""
    trace_id, span_id = ownership.trace_id, ownership.span_id
    valid = (
        len(trace_id) == 32
        and len(span_id) == 16
        and set(trace_id + span_id) <= _HEX
        and bool(trace_id.strip("0") and span_id.strip("0"))  # all-zero ids are invalid
    )
    return f"00-{trace_id}-{span_id}-01" if valid else ""


@dataclass(frozen=True)
class Grants:
    site: str
    session: int
    valid_until_mono_s: float
    epochs: Mapping[tuple[str, int], int]
    decisions: Mapping[str, str] = field(default_factory=dict)  # component -> traceparent

    def epoch(self, component: str, index: int, *, now_mono_s: float) -> int | None:
        """The epoch to stamp on work for this shard, or None: not ours, or run out."""
        if now_mono_s > self.valid_until_mono_s:
            return None
        return self.epochs.get((component, index))

    def grant(self, component: str, index: int, *, now_mono_s: float) -> tuple[int, float] | None:
        """(epoch, valid until) to stamp on work for the shard, or None."""
        epoch = self.epoch(component, index, now_mono_s=now_mono_s)
        return None if epoch is None else (epoch, self.valid_until_mono_s)

    def to_json(self) -> str:
        return json.dumps(self.to_doc())

    def to_doc(self) -> dict[str, Any]:
        """The grants as the file's JSON object (``to_json``)."""
        shards: dict[str, dict[str, int]] = {}
        for (component, index), epoch in sorted(self.epochs.items()):
            shards.setdefault(component, {})[str(index)] = epoch
        return {
            "site": self.site,
            "session": self.session,
            "valid_until_mono_s": self.valid_until_mono_s,
            "shards": shards,
            "decisions": dict(sorted(self.decisions.items())),
        }

    @staticmethod
    def from_json(text: str) -> Grants:
        try:
            data: Any = json.loads(text)
        except ValueError as err:
            raise ValueError(f"malformed grants file ({err})") from None
        return Grants.from_doc(data)

    @staticmethod
    def from_doc(data: Any) -> Grants:
        """The grants a parsed JSON object names; ValueError when it is malformed."""
        try:
            epochs = {
                (str(c), int(i)): int(e)
                for c, shards in data["shards"].items()
                for i, e in shards.items()
            }
            decisions = {str(c): str(tp) for c, tp in data.get("decisions", {}).items()}
            return Grants(
                str(data["site"]),
                int(data["session"]),
                float(data["valid_until_mono_s"]),
                epochs,
                decisions,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"malformed grants file ({err})") from None


NO_GRANTS = Grants("", 0, float("-inf"), {})


def grants_path(run_dir: Path, site: str) -> Path:
    return run_dir / f"grants-{site}.json"


def publish(path: Path, grants: Grants) -> None:
    """Write the file atomically: readers see the old or the new grants, never half."""
    write_text_atomically(path, grants.to_json())


class GrantsReader:
    """Reads a site's grants file, again only when it changed; missing or bad -> no grants."""

    def __init__(self, path: Path, *, monotonic: Callable[[], float]) -> None:
        self.path, self._monotonic = path, monotonic
        self._stamp: tuple[int, int] | None = None
        self._grants = NO_GRANTS
        self.errors = 0
        self._lock = threading.Lock()

    def current(self) -> Grants:
        """The grants as the file holds them now (safe to call from several threads)."""
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._grants = None, NO_GRANTS
                return self._grants
            stamp = (stat.st_mtime_ns, stat.st_ino)
            if stamp != self._stamp:
                try:
                    self._grants = Grants.from_json(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    self.errors += 1
                    self._grants = NO_GRANTS
                self._stamp = stamp
            return self._grants

    def epoch(self, component: str, index: int) -> tuple[int, float] | None:
        """(epoch, valid until) to stamp on work for the shard, or None."""
        return self.current().grant(component, index, now_mono_s=self._monotonic())
