"""BFM / Components (RED): per component and site, the messages handled (rate), those that
failed (errors) and how long they took (duration), with exemplars that lead to the trace
of a slow message."""

from __future__ import annotations

from grafanalib.core import TimeSeries
from panels import (
    GREEN,
    RED,
    bfm_dashboard,
    component_variable,
    decision_annotations,
    label_variable,
    layout,
    prom,
    prometheus_datasource,
    row,
    section,
    site_variable,
    state_timeline,
    steps,
    textbox_variable,
    timeseries,
    trace_by_id,
    trace_datasource,
    traces,
    value_mappings,
)

SITE = 'site=~"$site"'
COMPONENT = 'component=~"$component"'
MESSAGES = f'{SITE}, {COMPONENT}, kind=~"$kind"'
# Outcomes that are success: the producer's ack, a router's forward, a module's commit
# (a duplicate was committed before). Everything else is a refusal or a failure.
SUCCESS = "acked|forwarded|applied|duplicate"
RATE = "rate(bfm_messages_total{{{}}}[$__rate_interval])"
ALL_MESSAGES = RATE.format(MESSAGES)
FAILED = RATE.format(f'{MESSAGES}, outcome!~"{SUCCESS}"')

THROUGHPUT = f"sum by (site, component) ({ALL_MESSAGES})"
BY_OUTCOME = f"sum by (component, outcome) ({ALL_MESSAGES})"
ERRORS = f"sum by (site, component, outcome) ({FAILED})"
# 0 (not "no data") while nothing failed.
ERROR_SHARE = (
    f"(sum by (site, component) ({FAILED}) or 0 * sum by (site, component) ({ALL_MESSAGES}))"
    f" / sum by (site, component) ({ALL_MESSAGES})"
)


def latency(quantile: float) -> str:
    return (
        f"histogram_quantile({quantile}, sum by (site, component, le) "
        f"(rate(bfm_message_duration_seconds_bucket{{{MESSAGES}}}[$__rate_interval])))"
    )


UP = f"max by (site, component) (bfm_component_up{{{SITE}, {COMPONENT}}})"
# What BfmComponentCrashLooping and BfmStaleEpochWrites evaluate (alerts/rules/).
RESTARTS = f"bfm:site_component:component_restarts:increase15m{{{SITE}, {COMPONENT}}}"
FENCING = f"bfm:site_component_reason:stale_epoch_refusals:increase5m{{{SITE}, {COMPONENT}}}"

rate = section(
    "Rate",
    description=(
        "Messages handled per second: the producer's sends, each router's forwards, each "
        "module's commits, for the chosen sites, components and kinds."
    ),
)

throughput = timeseries(
    "Messages per second by component and site",
    description=(
        "Messages per second each component handled at each site, every outcome. At a "
        "failover one site's modules drop to 0 and the other's take their load; a "
        "component whose line falls while the producer's does not is losing work."
    ),
    targets=[prom(THROUGHPUT, "{{component}} @ {{site}}")],
    unit="reqps",
)

by_outcome = timeseries(
    "Messages per second by outcome",
    description=(
        "The same messages by component and outcome: acked (producer), forwarded "
        "(router), applied or duplicate (module), or a refusal reason (not-owner, "
        "stale-epoch, lease-expired, no-owner, module-unreachable, ...)."
    ),
    targets=[prom(BY_OUTCOME, "{{component}} {{outcome}}")],
    unit="reqps",
    stacked=True,
)

errors = section(
    "Errors",
    description=(
        "Messages not acknowledged, forwarded or applied, and the components behind "
        "them: refusals during a failover are expected for a second or two."
    ),
)

failed = timeseries(
    "Failed messages per second by reason",
    description=(
        "Refused or failed messages per second per site, component and reason. "
        "not-owner and lease-expired: ownership moved (a failover, a hand-back); "
        "stale-epoch: a site acted on ownership that had moved (fencing caught it); "
        "module-unreachable or router-unreachable: a process is down; given-up: lost."
    ),
    targets=[prom(ERRORS, "{{component}} @ {{site}} {{outcome}}")],
    unit="reqps",
    bars=True,
)

error_share = timeseries(
    "Error share by component and site",
    description=(
        "The share of each component's messages at each site that failed (0 while none "
        "did). Red above 1 %: a short spike at a failover is normal, a plateau is not."
    ),
    targets=[prom(ERROR_SHARE, "{{component}} @ {{site}}")],
    unit="percentunit",
    thresholds=steps(GREEN, (0.01, RED)),
)

component_up = state_timeline(
    "Components up",
    description=(
        "Per site and component, up (green) while it answers its site agent's probes, "
        "DOWN (red) otherwise; its shards then move to the other worker site "
        "(BfmComponentDown)."
    ),
    targets=[prom(UP, "{{component}} @ {{site}}")],
    mappings=value_mappings((1, "up", GREEN), (0, "DOWN", RED)),
)

restarts = timeseries(
    "Restarts in the last 15 minutes",
    description=(
        "Restarts of each crashed component process by its site's supervisor over the "
        "last 15 minutes: what BfmComponentCrashLooping watches (line: 3). The cause is "
        "in the component's log (Logs dashboard)."
    ),
    targets=[prom(RESTARTS, "{{component}} @ {{site}}")],
    thresholds=steps(GREEN, (3, RED)),
)

fencing = timeseries(
    "Fencing refusals in the last 5 minutes",
    description=(
        "Work each module refused over the last 5 minutes because of its epoch, by "
        "reason: stale-epoch (a newer owner exists: BfmStaleEpochWrites), lease-expired "
        "(its grant ran out), not-owner. Each is a write fencing prevented."
    ),
    targets=[prom(FENCING, "{{component}} @ {{site}} {{reason}}")],
)

duration = section(
    "Duration",
    description=(
        "How long messages took: the producer from first send to ack (retries "
        "included), a module from admit to commit. Routers keep no histogram. The dots "
        "are exemplars: one sampled message's value and trace id."
    ),
)


def latency_panel(name: str, quantile: float) -> TimeSeries:
    return timeseries(
        f"Latency {name} by component and site",
        description=(
            f"The {name} of message duration per component and site over Grafana's rate "
            "interval. Hover a dot (an exemplar) for the trace id of a message that took "
            "that long; with the Prometheus datasource's exemplar link set to the trace "
            "datasource it opens the trace, else paste the id into trace_id above and "
            "read it in the Trace panel below."
        ),
        targets=[prom(latency(quantile), "{{component}} @ {{site}}", exemplar=True)],
        unit="s",
    )


trace = traces(
    "Trace",
    description=(
        "The trace whose id is in the trace_id box (an exemplar's, or from a log line): "
        "the message's spans from producer through router to module, across sites, and "
        "the failover decision it waited for (linked). Empty box: nothing to show."
    ),
    targets=[trace_by_id("trace_id")],
)

dashboard = bfm_dashboard(
    name="components",
    title="Components (RED)",
    description=(
        "Rate, errors and duration of every component at every site, with exemplars "
        "leading to traces (docs/dashboards.md)."
    ),
    tags=["components"],
    variables=[
        prometheus_datasource(),
        trace_datasource(),
        site_variable("bfm_messages_total"),
        component_variable("bfm_messages_total"),
        label_variable(
            "kind",
            "Kind",
            'label_values(bfm_messages_total{site=~"$site", component=~"$component"}, kind)',
        ),
        textbox_variable("trace_id", "Trace id"),
    ],
    annotations=decision_annotations(),
    panels=layout(
        rate,
        row(8, (throughput, 12), (by_outcome, 12)),
        errors,
        row(8, (failed, 12), (error_share, 12)),
        row(7, (component_up, 8), (restarts, 8), (fencing, 8)),
        duration,
        row(8, (latency_panel("p99", 0.99), 12), (latency_panel("p50", 0.5), 12)),
        row(12, (trace, 24)),
    ),
)
