"""BFM / Logs: log rates by level, the log lines of the chosen sites, components and
levels, the controller's decisions and the delayed alarms, and everything one trace id
touched (its log lines at every site and its spans)."""

from __future__ import annotations

from panels import (
    GREEN,
    RED,
    bfm_dashboard,
    decision_annotations,
    layout,
    logs,
    loki,
    loki_datasource,
    loki_variable,
    prom,
    prometheus_datasource,
    row,
    section,
    steps,
    textbox_variable,
    timeseries,
    trace_by_id,
    trace_datasource,
    traces,
)

# The log store's labels are few (site, component, level, namespace); the trace and span
# ids are structured metadata, filtered with `| trace_id="..."` (docs/logstore.md).
STREAMS = '{site=~"$site", component=~"$component", level=~"$level"}'
PROBLEMS = '{site=~"$site", component=~"$component", level=~"warning|error|critical"}'
BY_LEVEL = f"sum by (level) (rate({STREAMS}[$__interval]))"
PROBLEMS_BY_SOURCE = f"sum by (site, component) (count_over_time({PROBLEMS}[$__interval]))"
LINES = f'{STREAMS} |= "$search"'
# Decisions come from the leader, at whichever site it runs: not filtered by site.
DECISIONS = '{component="bfm-site", site=~".+"} |= "decision" | json | event="decision"'
DELAYED = '{component="producer", site=~"$site"} |= "delayed" | json | event="delayed"'
# Every site and component: a trace crosses them all.
TRACE_LINES = '{site=~".+"} | trace_id="$trace_id"'
PROCESS = 'site=~"$site", component=~"$component"'
# What BfmLogLinesDropped evaluates (alerts/rules/logs.yaml).
DROPPED = f"bfm:site_component:log_lines_dropped:ratio_rate5m{{{PROCESS}}}"
SHIPPED = (
    f"sum by (site, component) (rate(bfm_log_lines_shipped_total{{{PROCESS}}}[$__rate_interval]))"
)

by_level = timeseries(
    "Log lines per second by level",
    description=(
        "Log lines per second of the chosen sites, components and levels, stacked by "
        "level. A jump in warning or error lines is where to look first; the "
        "annotations mark failovers."
    ),
    targets=[loki(BY_LEVEL, "{{level}}")],
    unit="short",
    stacked=True,
)

problems = timeseries(
    "Warnings and errors by site and component",
    description=(
        "Warning, error and critical lines per interval, per site and component "
        "(whatever the level filter): which process complains. Its lines: set the "
        "filters and read Log lines below."
    ),
    targets=[loki(PROBLEMS_BY_SOURCE, "{{component}} @ {{site}}")],
    bars=True,
)

lines = logs(
    "Log lines",
    description=(
        "The newest lines of the chosen sites, components and levels, containing the "
        "text in the search box (empty: every line). Open a line for its fields and its "
        "trace id; paste the trace id into trace_id to follow it."
    ),
    targets=[loki(LINES)],
)

following = section(
    "Following a failover or an alarm",
    description=(
        "The controller's decisions, the alarms a failover delayed, and everything one "
        "trace id touched: paste a trace id (from a delayed alarm, a decision or an "
        "exemplar) into the trace_id box."
    ),
)

decisions = logs(
    "Controller decisions",
    description=(
        "Every ownership decision the leading controller committed (initial, failover, "
        "drain, transfer, cancel_drain), with its component, shards, epoch, reason and "
        "trace id, whichever site led. Not filtered by site."
    ),
    targets=[loki(DECISIONS)],
)

delayed = logs(
    "Delayed messages",
    description=(
        "Messages the producer of the chosen sites had to retry before they were "
        "acknowledged (during a failover, for instance), with how long they waited, "
        "which site acknowledged them and, when sampled, their trace id."
    ),
    targets=[loki(DELAYED)],
)

trace_lines = logs(
    "Log lines of the trace",
    description=(
        "Every log line, at every site and component, carrying the trace id in the "
        "trace_id box, oldest first: one alarm's or one decision's path through the "
        "system. Empty box: lines without a trace id. `bfm trace <id>` prints the same "
        "with the spans."
    ),
    targets=[loki(TRACE_LINES)],
    oldest_first=True,
)

trace = traces(
    "Trace",
    description=(
        "The spans of the trace in the trace_id box, from the trace datasource (Tempo; "
        "BFM's log store answers the same request): producer, routers, modules and, "
        "for a decision, detect, decide, fence and record."
    ),
    targets=[trace_by_id("trace_id")],
)

shipping = section(
    "Log shipping",
    description="Whether the processes' lines reach the log store at all.",
)

dropped = timeseries(
    "Log lines dropped (share)",
    description=(
        "The share of each process's lines dropped instead of shipped over 5 minutes "
        "(queue full, push failed): BfmLogLinesDropped over 1 % (line). Those lines are "
        "missing from the panels above; check the log store."
    ),
    targets=[prom(DROPPED, "{{component}} @ {{site}}")],
    unit="percentunit",
    thresholds=steps(GREEN, (0.01, RED)),
)

shipped = timeseries(
    "Log lines shipped per second",
    description=(
        "Lines each process pushes to the log store per second. A process whose line "
        "drops to 0 while it runs has stopped shipping."
    ),
    targets=[prom(SHIPPED, "{{component}} @ {{site}}")],
)

dashboard = bfm_dashboard(
    name="logs",
    title="Logs",
    description=(
        "Log rates, lines, decisions, delayed alarms and trace-id search over the log "
        "store (Loki or BFM's embedded one; docs/dashboards.md)."
    ),
    tags=["logs"],
    variables=[
        loki_datasource(),
        prometheus_datasource(),
        trace_datasource(),
        loki_variable("site", "Site"),
        loki_variable("component", "Component", '{site=~"$site"}'),
        loki_variable("level", "Level", '{site=~"$site", component=~"$component"}'),
        textbox_variable("search", "Search"),
        textbox_variable("trace_id", "Trace id"),
    ],
    annotations=decision_annotations(),
    panels=layout(
        row(7, (by_level, 12), (problems, 12)),
        row(12, (lines, 24)),
        following,
        row(8, (decisions, 12), (delayed, 12)),
        row(12, (trace_lines, 12), (trace, 12)),
        shipping,
        row(6, (dropped, 12), (shipped, 12)),
    ),
)
