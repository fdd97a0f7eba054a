"""BFM / Resources (USE): utilisation, saturation and errors of each host (node exporter)
and each BFM process per site and component, built so that the saturated resource and
the busiest process stand out."""

from __future__ import annotations

from panels import (
    GREEN,
    ORANGE,
    RED,
    Gauge,
    bar_gauge,
    bfm_dashboard,
    component_variable,
    decision_annotations,
    layout,
    prom,
    prometheus_datasource,
    row,
    section,
    site_variable,
    steps,
    table,
    timeseries,
)

# Hosts: the node exporter (job node). A host labelled with its site (one host per site,
# as installed) follows $site; one without (the demo's single host, running every site)
# shows whatever the choice: it is never relabelled as several sites.
HOST_SITE = 'site=~"$site|"'
HOST = f'job="node", {HOST_SITE}'
NICS = 'device!~"lo|veth.*|docker.*|br-.*|virbr.*"'
# What the host alerts evaluate (alerts/rules/resources.yaml).
CPU_BUSY = f"bfm:site_instance:node_cpu_busy:ratio_rate5m{{{HOST_SITE}}}"
MEMORY_AVAILABLE = f"bfm:site_instance:node_memory_available:ratio{{{HOST_SITE}}}"
SPACE_FREE = f"bfm:site_instance_mountpoint:node_filesystem_avail:ratio{{{HOST_SITE}}}"
HOST_FDS = f"bfm:site_instance:node_filefd_allocated:ratio{{{HOST_SITE}}}"
LOAD_PER_CPU = (
    f"max by (site, instance) (node_load1{{{HOST}}})"
    f' / count by (site, instance) (node_cpu_seconds_total{{{HOST}, mode="idle"}})'
)
PAGE_FAULTS = f"sum by (site, instance) (rate(node_vmstat_pgmajfault{{{HOST}}}[$__rate_interval]))"
DISK_BUSY = (
    "max by (site, instance, device) "
    f"(rate(node_disk_io_time_seconds_total{{{HOST}}}[$__rate_interval]))"
)


def per_nic(metric: str) -> str:
    return f"rate({metric}{{{HOST}, {NICS}}}[$__rate_interval])"


NET_ERRORS = " + ".join(
    per_nic(f"node_network_{way}_{what}_total")
    for way in ("receive", "transmit")
    for what in ("errs", "drop")
)

PROCESS = 'site=~"$site", component=~"$component"'
# One Python thread does a BFM process's work: 1 CPU second per second is all it gets.
CPU = (
    f"max by (site, component) (rate(bfm_process_cpu_seconds_total{{{PROCESS}}}[$__rate_interval]))"
)
CPU_NOW = f"max by (site, component) (rate(bfm_process_cpu_seconds_total{{{PROCESS}}}[1m]))"
MEMORY = f"max by (site, component) (bfm_process_resident_memory_bytes{{{PROCESS}}})"
# What BfmProcessFileDescriptorsHigh evaluates.
FDS = (
    f"max by (site, component) (bfm_process_open_fds{{{PROCESS}}}"
    f" / bfm_process_max_fds{{{PROCESS}}})"
)
CPU_PER_SITE = (
    'sum by (site) (rate(bfm_process_cpu_seconds_total{site=~"$site"}[$__rate_interval]))'
)
SHARE = steps(GREEN, (0.8, ORANGE), (0.9, RED))
MEMORY_STEPS = steps(GREEN, (200e6, ORANGE), (300e6, RED))

hosts = section(
    "Hosts (node exporter)",
    description=(
        "Each host's CPU, memory, disks, network and file descriptors. On one machine "
        "running every site there is one host, shown whatever the site filter; the "
        "per-site view is the BFM processes below."
    ),
)

saturation = bar_gauge(
    "Host saturation now",
    description=(
        "Per host, how full each resource is: CPU busy (5 min), memory in use, the "
        "fullest real filesystem, file descriptors allocated. Orange from 80 %, red from "
        "90 %: the red bar is the bottleneck. The alerts fire at CPU 90 %, memory 90 %, "
        "disk 85 %/95 %, descriptors 80 %."
    ),
    targets=[
        prom(CPU_BUSY, "CPU {{instance}}"),
        prom(f"1 - {MEMORY_AVAILABLE}", "memory {{instance}}"),
        prom(f"1 - min by (site, instance) ({SPACE_FREE})", "disk {{instance}}"),
        prom(HOST_FDS, "file descriptors {{instance}}"),
    ],
    unit="percentunit",
    thresholds=SHARE,
    value_max=1,
)

load = timeseries(
    "Load per CPU (CPU saturation)",
    description=(
        "The 1-minute load average divided by the number of CPUs: above 1 (the line) "
        "processes wait for a CPU, and BFM's message latency and lease renewals grow."
    ),
    targets=[prom(LOAD_PER_CPU, "{{instance}}")],
    thresholds=steps(GREEN, (1, RED)),
)

page_faults = timeseries(
    "Major page faults (memory saturation)",
    description=(
        "Page faults per second that had to read from disk: near 0 normally; a lasting "
        "rise means memory is short and the host is swapping or evicting its caches."
    ),
    targets=[prom(PAGE_FAULTS, "{{instance}}")],
    unit="ops",
)

cpu_busy = timeseries(
    "Host CPU busy",
    description=(
        "The share of time the host's CPUs were busy, over 5 minutes: what "
        "BfmNodeCpuSaturated watches (line: 90 %). Which process: the table below."
    ),
    targets=[prom(CPU_BUSY, "{{instance}}")],
    unit="percentunit",
    thresholds=steps(GREEN, (0.9, RED)),
    value_min=0,
    value_max=1,
)

memory_available = timeseries(
    "Host memory available",
    description=(
        "The share of the host's memory available to new work: BfmNodeMemoryLow fires "
        "under 10 % (line). Below it the kernel kills a process, and its site fails over."
    ),
    targets=[prom(MEMORY_AVAILABLE, "{{instance}}")],
    unit="percentunit",
    thresholds=steps(RED, (0.1, GREEN)),
    value_min=0,
    value_max=1,
)

space_free = timeseries(
    "Filesystem space free",
    description=(
        "The free share of each real, writable filesystem: BfmNodeDiskSpaceLow under "
        "15 %, BfmNodeDiskFull under 5 % (lines). When full, ledger commits fail and "
        "every message of that site's modules is refused."
    ),
    targets=[prom(SPACE_FREE, "{{instance}} {{mountpoint}}")],
    unit="percentunit",
    thresholds=steps(RED, (0.05, ORANGE), (0.15, GREEN)),
    value_min=0,
    value_max=1,
)

network = timeseries(
    "Network throughput",
    description=(
        "Bytes per second received (rx) and sent (tx) per network interface (loopback "
        "and container bridges left out). Compare with the link's capacity."
    ),
    targets=[
        prom(
            f"sum by (site, instance, device) ({per_nic('node_network_receive_bytes_total')})",
            "rx {{instance}} {{device}}",
        ),
        prom(
            f"sum by (site, instance, device) ({per_nic('node_network_transmit_bytes_total')})",
            "tx {{instance}} {{device}}",
        ),
    ],
    unit="Bps",
)

network_errors = timeseries(
    "Network errors and drops",
    description=(
        "Packets per second the interfaces failed or dropped, in and out: should be 0; "
        "anything else loses or delays BFM's traffic between sites."
    ),
    targets=[prom(f"sum by (site, instance) ({NET_ERRORS})", "{{instance}}")],
    unit="pps",
    thresholds=steps(GREEN, (1, RED)),
)

disk_busy = timeseries(
    "Disk busy",
    description=(
        "The share of time each disk was busy with I/O: near 100 % (line: 90 %) it "
        "is saturated and ledger commits and the store wait for it."
    ),
    targets=[prom(DISK_BUSY, "{{instance}} {{device}}")],
    unit="percentunit",
    thresholds=steps(GREEN, (0.9, RED)),
)

host_fds = timeseries(
    "Host file descriptors",
    description=(
        "The share of the kernel's file-descriptor limit allocated: "
        "BfmNodeFileDescriptorsHigh over 80 % (line)."
    ),
    targets=[prom(HOST_FDS, "{{instance}}")],
    unit="percentunit",
    thresholds=steps(GREEN, (0.8, RED)),
)

processes = section(
    "BFM processes (per site and component)",
    description=(
        "Every BFM process's own CPU, memory and file descriptors (bfm_process_*): the "
        "site process (bfm-site), each component (eap ... backbone) and the producer."
    ),
)

busiest = table(
    "Busiest processes",
    description=(
        "Every BFM process now, busiest first: CPU over the last minute (100 % = one "
        "CPU, all a BFM process can use), resident memory, and the share of its "
        "file-descriptor limit open. A red CPU cell is a process that cannot keep up: "
        "its messages queue (BfmProcessCpuHigh)."
    ),
    targets=[prom(CPU_NOW, table=True), prom(MEMORY, table=True), prom(FDS, table=True)],
    hide_columns=("Time",),
    rename={"Value #A": "CPU", "Value #B": "memory", "Value #C": "file descriptors"},
    gauges={
        "CPU": Gauge("percentunit", SHARE, 1),
        "memory": Gauge("bytes", MEMORY_STEPS),
        "file descriptors": Gauge("percentunit", SHARE, 1),
    },
    sort_by="CPU",
    descending=True,
)

top_cpu = timeseries(
    "CPU per process, top 5",
    description=(
        "The five BFM processes using the most CPU at each moment (100 % = one CPU). "
        "The line is BfmProcessCpuHigh's 90 %: a process at it is CPU-bound."
    ),
    targets=[prom(f"topk(5, {CPU})", "{{component}} @ {{site}}")],
    unit="percentunit",
    thresholds=steps(GREEN, (0.9, RED)),
)

memory = timeseries(
    "Resident memory per process",
    description=(
        "Each BFM process's resident memory. The line is BfmProcessMemoryHigh's 300 MB "
        "(a whole site's own processes' budget); a line that only grows is a leak."
    ),
    targets=[prom(MEMORY, "{{component}} @ {{site}}")],
    unit="bytes",
    thresholds=steps(GREEN, (300e6, RED)),
)

fds = timeseries(
    "File descriptors per process",
    description=(
        "The share of each process's file-descriptor limit open: "
        "BfmProcessFileDescriptorsHigh over 80 % (line); steady growth is a "
        "connection leak."
    ),
    targets=[prom(FDS, "{{component}} @ {{site}}")],
    unit="percentunit",
    thresholds=steps(GREEN, (0.8, RED)),
)

cpu_per_site = timeseries(
    "CPU per site (BFM processes)",
    description=(
        "All BFM processes of a site together (100 % = one CPU): the per-site view on "
        "a host that runs several sites. The idle budget is 5 % of 2 CPUs for a site's "
        "own processes."
    ),
    targets=[prom(CPU_PER_SITE, "{{site}}")],
    unit="percentunit",
)

dashboard = bfm_dashboard(
    name="resources",
    title="Resources (USE)",
    description=(
        "Hosts and BFM processes: utilisation, saturation, errors; the bottleneck in "
        "red, the busiest process on top (docs/dashboards.md)."
    ),
    tags=["resources"],
    variables=[
        prometheus_datasource(),
        site_variable("bfm_process_cpu_seconds_total"),
        component_variable("bfm_process_cpu_seconds_total"),
    ],
    annotations=decision_annotations(),
    panels=layout(
        hosts,
        row(7, (saturation, 10), (load, 7), (page_faults, 7)),
        row(7, (cpu_busy, 8), (memory_available, 8), (space_free, 8)),
        row(7, (network, 8), (network_errors, 5), (disk_busy, 6), (host_fds, 5)),
        processes,
        row(9, (busiest, 12), (top_cpu, 12)),
        row(8, (memory, 8), (fds, 8), (cpu_per_site, 8)),
    ),
)
