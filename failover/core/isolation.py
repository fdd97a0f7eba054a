"""When the leader marks a dead site's nodes out of service, and when it unmarks them.

Pure: the runtime (``failover.runtime.site_isolation``) gathers the facts. The mark (on
Kubernetes the ``node.kubernetes.io/out-of-service`` taint) makes the platform delete
the site's pods at once and release their volumes, which it would otherwise hold for
minutes; on a site that is in fact alive it would stop healthy work. So it needs every
witness at once:

- BFM judges the site dead (its lease unchanged for the lease duration), and
- the majority has already fenced it: the site owns no shard of any component (every
  failover away from it is committed, under new epochs), and
- the platform itself sees none of its nodes alive (Kubernetes: NotReady, or the node
  Lease stopped changing).

The mark comes off as soon as the platform sees every node of the site alive again, not
later: BFM's own agent at that site may be one of the pods the mark keeps away, so waiting
for BFM's lease would never end. The site's work comes back by the usual hand-back, after
the hold-off, once its agent runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class IsolationStep(StrEnum):
    ISOLATE = "isolate"
    RELEASE = "release"


@dataclass(frozen=True)
class IsolationFacts:
    """What is known of one worker site."""

    site: str
    bfm_alive: bool | None  # None: BFM has never seen the site's lease
    shards_held: int  # shards of every component the site owns now
    nodes: int
    nodes_up: int
    nodes_isolated: int


def isolation_step(facts: IsolationFacts) -> IsolationStep | None:
    """What to do about a site now (see the module docstring); None: nothing."""
    if facts.nodes == 0:
        return None
    if facts.nodes_isolated > 0 and facts.nodes_up == facts.nodes:
        return IsolationStep.RELEASE
    dead = facts.bfm_alive is False and facts.shards_held == 0 and facts.nodes_up == 0
    if dead and facts.nodes_isolated < facts.nodes:  # again after a partial mark
        return IsolationStep.ISOLATE
    return None
