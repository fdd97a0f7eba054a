"""BFM / Failover controller: who leads, how fast leases renew, how long decisions take,
how fast failures are detected and recovered, the hand-back, the coordination store and
the failsafe."""

from __future__ import annotations

from panels import (
    BLUE,
    GREEN,
    GREY,
    RED,
    bfm_dashboard,
    component_variable,
    decision_annotations,
    increase_with_new,
    layout,
    leader_stat,
    prom,
    prometheus_datasource,
    row,
    section,
    site_variable,
    stat,
    state_timeline,
    steps,
    timeseries,
    value_mappings,
)

SITE = 'site=~"$site"'
COMPONENT = 'component=~"$component"'
WINDOW = "5m"  # decisions are rare: each shows for 5 minutes after it

IS_LEADER = f'max by (site) (bfm_controller_is_leader{{component="controller", {SITE}}})'
SEES_LEADER = f'max by (site) (bfm_leader_present{{component="controller", {SITE}}})'
FAILSAFE = f"max by (site) (bfm_failsafe_active{{{SITE}}})"
FENCED = f"max by (site) (bfm_site_fenced{{{SITE}}})"
# What BfmLeaseRenewalSlow evaluates (alerts/rules/controller.yaml).
RENEWAL_P99 = f"bfm:site_component:lease_renewal_duration_seconds:p99_rate5m{{{SITE}}}"
RENEWALS = (
    "sum by (site, component) "
    f"(rate(bfm_lease_renewal_duration_seconds_count{{{SITE}}}[$__rate_interval]))"
)
PHASES = (
    "histogram_quantile(0.99, sum by (phase, le) ("
    + increase_with_new("bfm_decision_phase_duration_seconds_bucket", WINDOW)
    + "))"
)


def mean_per_failure(metric: str, selector: str) -> str:
    """The mean of a per-failure histogram over each window, the slowest component's
    per site; counts a failed site's first failure too (its series is new then), and
    shows nothing (rather than NaN) for windows without a failure."""
    total = increase_with_new(f"{metric}_sum{{{selector}}}", WINDOW)
    count = increase_with_new(f"{metric}_count{{{selector}}}", WINDOW)
    return f"max by (site) (({total}) / (({count}) > 0))"


DETECTION = mean_per_failure("bfm_detection_seconds", SITE)
RECOVERY = mean_per_failure("bfm_recovery_seconds", f"{SITE}, {COMPONENT}")
# What BfmShardsUneven and BfmHandbackStuck evaluate (alerts/rules/ownership.yaml).
HANDBACK = f"bfm:site_component:handback_pending_shards:max{{{SITE}, {COMPONENT}}}"
# What BfmFailoverInProgress evaluates (alerts/rules/failover.yaml).
WAITING = f"max by (site, component) (bfm_failover_in_progress{{{SITE}, {COMPONENT}}})"
REACHABLE = f"max by (site, component) (bfm_store_reachable{{{SITE}}})"
STORE_P99 = (
    "histogram_quantile(0.99, sum by (op, le) "
    f"(rate(bfm_store_request_duration_seconds_bucket{{{SITE}}}[$__rate_interval])))"
)
STORE_OUTCOMES = (
    "sum by (site, outcome) "
    f"(rate(bfm_store_request_duration_seconds_count{{{SITE}}}[$__rate_interval]))"
)
YES_NO = value_mappings((0, "no", GREEN), (1, "YES", RED))

leader = leader_stat(
    description=(
        "The site whose controller replica holds the leader lease: it alone decides "
        "failovers, hand-backs and the license. 'NO LEADER' for longer than the lease "
        "(1.6 s) plus a round: BfmControllerNoLeader; the replicas usually cannot write "
        "to the coordination store (below). Not filtered by site."
    ),
)

sees_leader = stat(
    "Replicas seeing a leader",
    description=(
        "Per site, whether its controller replica sees a leader lease renewed in time "
        "(its own or another's). A replica that sees none while the others do is cut "
        "off from the store."
    ),
    targets=[prom(SEES_LEADER, "{{site}}")],
    mappings=value_mappings((1, "yes", GREEN), (0, "NO", RED)),
    text_mode="value_and_name",
)

failsafe = stat(
    "Failsafe",
    description=(
        "Per site, YES while it keeps its shards frozen because every site lost the "
        "coordination store (control-plane failsafe, BfmFailsafeActive): messages flow, "
        "but nothing can fail over. Restore the store."
    ),
    targets=[prom(FAILSAFE, "{{site}}")],
    mappings=YES_NO,
    text_mode="value_and_name",
)

fenced = stat(
    "Fenced",
    description=(
        "Per site, YES while it has fenced itself: its lease ran out (it lost the store "
        "while the others did not), so it serves nothing and the others own its shards. "
        "It unfences once it renews its lease again."
    ),
    targets=[prom(FENCED, "{{site}}")],
    mappings=YES_NO,
    text_mode="value_and_name",
)

leadership = state_timeline(
    "Leadership over time",
    description=(
        "Per site, when its controller replica led (blue) and when it followed (grey): a "
        "change of colour is a leader change (the old leader's site failed, or lost the "
        "store)."
    ),
    targets=[prom(IS_LEADER, "{{site}}")],
    mappings=value_mappings((1, "leader", BLUE), (0, "follower", GREY)),
)

failsafe_fenced = state_timeline(
    "Failsafe and fencing over time",
    description=(
        "Per site, when it ran on the failsafe (all sites without the store) and when it "
        "was fenced (it alone without the store): red bands. Normally both are green."
    ),
    targets=[prom(FAILSAFE, "failsafe {{site}}"), prom(FENCED, "fenced {{site}}")],
    mappings=YES_NO,
)

leases = section(
    "Leases",
    description=(
        "Site leases (renewed by each site's agent) and the leader lease (by each "
        "controller replica): a lease that is not renewed within its duration makes the "
        "site count as down, and the controller lose the lead."
    ),
)

renewal_p99 = timeseries(
    "Lease renewal p99",
    description=(
        "The slowest 1 % of lease renewals over 5 minutes, per site and agent or "
        "controller: what BfmLeaseRenewalSlow watches (the line: 0.25 s, the renew "
        "interval). Slower renewals mean a slow store or path to it; one over 1 s fences "
        "the site."
    ),
    targets=[prom(RENEWAL_P99, "{{component}} @ {{site}}")],
    unit="s",
    thresholds=steps(GREEN, (0.25, RED)),
)

renewals = timeseries(
    "Lease renewals per second",
    description=(
        "Lease renewals per second per site and agent or controller: steady while all "
        "is well; a site whose line drops to 0 has stopped renewing (crashed, cut off, "
        "or its store calls fail)."
    ),
    targets=[prom(RENEWALS, "{{component}} @ {{site}}")],
    unit="ops",
)

decisions = section(
    "Decisions",
    description=(
        "What the leading controller decided and how long it took; every value shows "
        "for 5 minutes after the decisions it describes."
    ),
)

phases = timeseries(
    "Decision latency per phase (p99)",
    description=(
        "How long the phases of the leader's decisions took, p99 over 5 minutes: detect "
        "(first observation to deciding, lease wait and hold-off included), decide, "
        "fence (the ownership writes) and record (the history). Detect dominates; a slow "
        "fence or record points at the store."
    ),
    targets=[prom(PHASES, "{{phase}}")],
    unit="s",
)

detect_recover = timeseries(
    "Detection and recovery per failed site",
    description=(
        "Per failed site, mean seconds from its last lease change to being judged down "
        "(detect), and from that to the commit of the failover that moved its shards "
        "(recover; the slowest component). The line: the 5 s target for a site loss "
        "(ARCHITECTURE.md section 6)."
    ),
    targets=[prom(DETECTION, "detect {{site}}"), prom(RECOVERY, "recover {{site}}")],
    unit="s",
    thresholds=steps(GREEN, (5, RED)),
)

handback = timeseries(
    "Hand-back pending shards",
    description=(
        "Shards the even split would give back to each site that another live site "
        "still holds: up after a site returns, down to 0 as its hold-off passes and the "
        "shards are handed back. Above 0 for 10 minutes: BfmShardsUneven; not moving: "
        "BfmHandbackStuck."
    ),
    targets=[prom(HANDBACK, "{{component}} -> {{site}}")],
)

waiting = state_timeline(
    "Shards waiting for a new owner",
    description=(
        "Per site and component, red while the site holds shards whose grant is no "
        "longer valid (site or component down) and the controller has not moved them: "
        "normally under a second. Longer means no live site runs the component "
        "(BfmFailoverInProgress, BfmFailoverTooLong)."
    ),
    targets=[prom(WAITING, "{{component}} @ {{site}}")],
    mappings=value_mappings((0, "owned", GREEN), (1, "WAITING", RED)),
)

store = section(
    "Coordination store",
    description=(
        "The store (etcd, or SQLite on one host) that holds leases and ownership, as "
        "each site's agent and controller replica sees it."
    ),
)

reachable = state_timeline(
    "Store reachable",
    description=(
        "Per site and agent or controller: green while its last store request got an "
        "answer, red while it does not (BfmStoreUnreachable). One site red: its network "
        "to the store; all red: the store itself."
    ),
    targets=[prom(REACHABLE, "{{component}} @ {{site}}")],
    mappings=value_mappings((1, "reachable", GREEN), (0, "UNREACHABLE", RED)),
)

store_latency = timeseries(
    "Store request latency p99 by operation",
    description=(
        "The slowest 1 % of store requests per operation (get, create, compare_and_set, "
        "list, delete, ...) from the chosen sites. The line is the 0.5 s store deadline: "
        "requests that slow are given up as unavailable or unknown."
    ),
    targets=[prom(STORE_P99, "{{op}}")],
    unit="s",
    thresholds=steps(GREEN, (0.5, RED)),
)

store_outcomes = timeseries(
    "Store requests by outcome",
    description=(
        "Store requests per second per site and outcome: ok and conflict are answers "
        "(a conflict is a lost compare-and-set, normal between replicas); unavailable, "
        "unknown and error are failures."
    ),
    targets=[prom(STORE_OUTCOMES, "{{site}} {{outcome}}")],
    unit="reqps",
    stacked=True,
)

dashboard = bfm_dashboard(
    name="controller",
    title="Failover controller",
    description=(
        "The control plane: leader, leases, decision and recovery times, hand-back, the "
        "coordination store and the failsafe (docs/dashboards.md)."
    ),
    tags=["controller"],
    variables=[
        prometheus_datasource(),
        site_variable("bfm_controller_is_leader"),
        component_variable("bfm_shards_owned"),
    ],
    annotations=decision_annotations(),
    panels=layout(
        row(4, (leader, 6), (sees_leader, 6), (failsafe, 6), (fenced, 6)),
        row(6, (leadership, 12), (failsafe_fenced, 12)),
        leases,
        row(7, (renewal_p99, 12), (renewals, 12)),
        decisions,
        row(8, (phases, 12), (detect_recover, 12)),
        row(8, (handback, 12), (waiting, 12)),
        store,
        row(7, (reachable, 8), (store_latency, 8), (store_outcomes, 8)),
    ),
)
