"""BFM / Overview: the first look at 3 a.m. Is every site up, who owns which shards, did
anything fail over, do alarms get through in time, and what is firing."""

from __future__ import annotations

from panels import (
    GREEN,
    GREY,
    ORANGE,
    RED,
    bfm_dashboard,
    component_variable,
    decision_annotations,
    layout,
    leader_stat,
    link_to,
    prom,
    prometheus_datasource,
    row,
    section,
    site_variable,
    stat,
    state_timeline,
    steps,
    table,
    timeseries,
    value_mappings,
)

SITE = 'site=~"$site"'
COMPONENT = 'component=~"$component"'
ALARMS = 'component="producer", kind="alarm"'

# Leader-exported series (docs/metrics.md): aggregated by what they are about, so that a
# leader change (another replica, another instance) keeps one series per site.
SITE_UP = f'max by (site) (bfm_site_up{{component="controller", {SITE}}})'
TARGETS_UP = f'avg by (site) (up{{job="bfm", {SITE}}})'
CRITICAL = 'count(ALERTS{alertstate="firing", severity="critical"}) or vector(0)'
OWNED = f"max by (site, component) (bfm_shards_owned{{{SITE}, {COMPONENT}}})"
EPOCHS = f"max by (component) (bfm_epoch_max{{{COMPONENT}}})"
ALARM_RATE = (
    f"sum by (site, outcome) (rate(bfm_messages_total{{{ALARMS}, {SITE}}}[$__rate_interval]))"
)
# What BfmAlarmLatencyHigh evaluates (alerts/rules/messages.yaml), and the median beside it.
ALARM_P99 = (
    "max by (site) "
    f"(bfm:site_component_kind:message_duration_seconds:p99_rate5m{{{ALARMS}, {SITE}}})"
)
ALARM_P50 = (
    "histogram_quantile(0.5, sum by (site, le) "
    f"(rate(bfm_message_duration_seconds_bucket{{{ALARMS}, {SITE}}}[5m])))"
)
# What the error-budget alerts evaluate (the fast burn: over 1 h and over 5 min).
NOT_ACKED_5M = f"bfm:site:alarm_messages_not_acked:ratio_rate5m{{{SITE}}}"
NOT_ACKED_1H = f"bfm:site:alarm_messages_not_acked:ratio_rate1h{{{SITE}}}"
FAST_BURN = 0.0144  # 14.4 times the 0.1 % budget
# Alerts without a site (no leader, the watchdog) show whatever the site filter.
FIRING = 'ALERTS{alertstate="firing", site=~"$site|"}'
UP_DOWN = value_mappings((1, "up", GREEN), (0, "DOWN", RED))

sites = link_to(
    stat(
        "Sites",
        description=(
            "Each site as the leading controller judges it: up while its lease is renewed "
            "in time, DOWN (red) once it has not been for the lease duration; its shards "
            "then move to the other worker site. No value: no controller leads (see "
            "Leader). Next: the Failover controller dashboard."
        ),
        targets=[prom(SITE_UP, "{{site}}")],
        mappings=UP_DOWN,
        text_mode="value_and_name",
        no_value="no leader reporting",
    ),
    "controller",
    "Failover controller",
)

targets_up = stat(
    "Processes answering scrapes",
    description=(
        "Per site, the share of its BFM processes (site process, components, producer) "
        "whose /metrics Prometheus can scrape (`up`). Below 100 % one is down or hung: "
        "BfmComponentDown or BfmTelemetryMissing says which. A site that is DOWN shows 0 %."
    ),
    targets=[prom(TARGETS_UP, "{{site}}")],
    unit="percentunit",
    thresholds=steps(RED, (0.5, ORANGE), (1, GREEN)),
    text_mode="value_and_name",
)

leader = leader_stat(
    description=(
        "The site whose controller replica holds the leader lease, and so decides "
        "failovers. 'NO LEADER' for longer than a few seconds: nobody fails anything "
        "over (BfmControllerNoLeader); see the coordination store on the Failover "
        "controller dashboard. Not filtered by site."
    ),
)

critical = stat(
    "Critical alerts firing",
    description=(
        "How many critical BFM alerts fire now (site down, no leader, failsafe, a "
        "failover taking too long, a disk full, the alarm error budget burning fast). "
        "Each is listed, with its site, under Firing alerts; its runbook is in "
        "alerts/runbooks/."
    ),
    targets=[prom(CRITICAL, "critical")],
    thresholds=steps(GREEN, (1, RED)),
    text_mode="value",
)

sites_over_time = state_timeline(
    "Sites over time",
    description=(
        "Each site up (green) or DOWN (red) over the time range, as the leading "
        "controller judged it; the annotations mark failovers (red) and planned moves "
        "(blue). Gaps: no controller led."
    ),
    targets=[prom(SITE_UP, "{{site}}")],
    mappings=UP_DOWN,
)

owned = timeseries(
    "Shards owned per site",
    description=(
        "Shards of each component owned by each worker site, stacked per component: at "
        "a failover one site's share drops to 0 and the other's doubles; after the site "
        "comes back and its hold-off has passed, the split evens out again (hand-back). "
        "A split that stays uneven: BfmShardsUneven."
    ),
    targets=[prom(OWNED, "{{component}} @ {{site}}")],
    stacked=True,
)

owners_now = table(
    "Who owns what now",
    description=(
        "Shards of each component per site at the end of the time range, from the "
        "leading controller. A live worker site with 0 shards of a component it runs is "
        "waiting for its hand-back (Failover controller dashboard)."
    ),
    targets=[prom(OWNED, table=True)],
    hide_columns=("Time",),
    rename={"Value": "shards"},
    sort_by="component",
)

epochs = timeseries(
    "Highest epoch per component",
    description=(
        "The largest epoch (fencing token) granted per component. It steps up at every "
        "ownership change (failover, hand-back, drain), so a step is a move; work "
        "carrying an older epoch is refused (fencing refusals on the Components "
        "dashboard). Not filtered by site: the value is system-wide."
    ),
    targets=[prom(EPOCHS, "{{component}}")],
)

alarm_path = section(
    "Alarm path",
    description=(
        "Alarms from the producer (the devices' side) through a router to the module "
        "that owns their shard, as the producer sees them: sent, acknowledged or "
        "refused, and how long until acknowledged."
    ),
)

alarm_rate = link_to(
    timeseries(
        "Alarms per second by outcome",
        description=(
            "Alarm sends per second at each site's producer, by outcome: acked, or why "
            "not (not-owner, stale-epoch, lease-expired, no-owner, module-unreachable, "
            "router-unreachable, given-up). Refusals during a failover are retried until "
            "acknowledged; given-up means lost. Per component: the Components dashboard."
        ),
        targets=[prom(ALARM_RATE, "{{site}} {{outcome}}")],
        unit="reqps",
    ),
    "components",
    "Components (RED)",
)

alarm_latency = link_to(
    timeseries(
        "Alarm latency (send to ack)",
        description=(
            "p99 and median time from an alarm's first send to its acknowledgement, "
            "retries included, over 5-minute windows, per producer site. The line is "
            "BfmAlarmLatencyHigh's 2.5 s (a quarter of the 10 s alarm-transmission "
            "bound). A failover shows as a bump; a p99 that stays high: find the slow "
            "component on the Components dashboard (exemplars lead to traces)."
        ),
        targets=[prom(ALARM_P99, "p99 {{site}}"), prom(ALARM_P50, "p50 {{site}}")],
        unit="s",
        thresholds=steps(GREEN, (2.5, RED)),
    ),
    "components",
    "Components (RED)",
)

not_acked = timeseries(
    "Alarms not acknowledged at first (share)",
    description=(
        "The share of alarm sends refused or given up, over the last 5 minutes and the "
        "last hour, per producer site: what BfmAlarmErrorBudgetBurnFast watches (it "
        "fires when both stay above the line, 14.4 times the 0.1 % budget). A failover "
        "makes a short spike in the 5-minute share."
    ),
    targets=[prom(NOT_ACKED_5M, "5 min {{site}}"), prom(NOT_ACKED_1H, "1 h {{site}}")],
    unit="percentunit",
    thresholds=steps(GREEN, (FAST_BURN, RED)),
)

firing = table(
    "Firing alerts",
    description=(
        "BFM alerts firing now (critical first): name, severity, site and component. "
        "BfmWatchdog (info) always fires: its absence means alerting is broken. Alerts "
        "about the whole system (no leader) show whatever the site filter. Each alert's "
        "runbook: alerts/runbooks/<alertname>.md."
    ),
    targets=[prom(FIRING, table=True)],
    hide_columns=("Time", "Value", "__name__", "alertstate", "job", "instance"),
    column_mappings={
        "severity": value_mappings(
            ("critical", "critical", RED), ("warning", "warning", ORANGE), ("info", "info", GREY)
        )
    },
    sort_by="severity",
)

dashboard = bfm_dashboard(
    name="overview",
    title="Overview",
    description=(
        "The whole system at a glance: sites, leader, ownership, epochs, the alarm path "
        "and firing alerts; failovers marked on every graph (docs/dashboards.md)."
    ),
    tags=["overview"],
    variables=[prometheus_datasource(), site_variable(), component_variable()],
    annotations=decision_annotations(),
    panels=layout(
        row(4, (sites, 8), (targets_up, 6), (leader, 5), (critical, 5)),
        row(7, (sites_over_time, 12), (owned, 12)),
        row(7, (owners_now, 9), (epochs, 15)),
        alarm_path,
        row(8, (alarm_rate, 12), (alarm_latency, 12)),
        row(8, (not_acked, 12), (firing, 12)),
    ),
)
