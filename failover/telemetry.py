"""BFM's metric catalogue (ARCHITECTURE.md section 5; documented in docs/metrics.md) and
its tracer.

Every metric is labelled ``site`` (lowercase a, b, w) and ``component``; none has an
unbounded label (``kind``, ``outcome``, ``phase``, ``op`` and ``reason`` take a handful of
values each). The objects live on prometheus-client's default registry: a process exposes
them once ``bfm_observe.configure(..., metrics_port=...)`` started its HTTP server, and
updating them without that costs a few hundred nanoseconds and shows nowhere.

Who exports what (so each series has one source):
- the **leader** controller replica: the system's state as it decides it
  (``bfm_site_up``, ``bfm_shards_owned``, ``bfm_epoch_max``, ``bfm_failover_in_progress``,
  ``bfm_handback_pending_shards``; ``site`` is the site the value is about). A replica that
  stops leading removes its series.
- every controller replica: ``bfm_controller_is_leader``, ``bfm_leader_present``.
- each worker site's agent: its own components (``bfm_component_up``,
  ``bfm_component_restarts_total``), its lease renewals, its failsafe.
- every process: its store requests, messages it handled, its process resources and
  dropped log lines (the last two from ``bfm_observe``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

TRACER_NAME = "bfm"

SITE_COMPONENT = ("site", "component")

# Buckets in seconds: store calls and lease renewals (ms to the 0.5 s store deadline),
# message latencies (sub-ms to the retry ceiling), phases and recoveries (to a minute).
FAST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MESSAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
SLOW_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


TELEMETRY_ENV = "BFM_TELEMETRY"
"""``off`` (or 0/false/no) keeps a process from configuring telemetry (benchmarks compare)."""


def telemetry_wanted() -> bool:
    return os.environ.get(TELEMETRY_ENV, "on").strip().lower() not in {"off", "0", "false", "no"}


def targets_file(run_dir: Path, site: str, component: str, instance: str = "") -> Path:
    """Where a process of a run announces its metrics address (Prometheus file_sd JSON);
    ``instance`` tells apart several processes of one component at one site."""
    suffix = f"-{instance}" if instance else ""
    return run_dir / "targets" / f"{site}-{component}{suffix}.json"


METRICS_LISTEN_ENV = "BFM_METRICS_LISTEN"


def metrics_listen_from_env(environ: Mapping[str, str]) -> tuple[str, int]:
    """Where /metrics listens: ``BFM_METRICS_LISTEN=HOST:PORT`` (a pod exposes it to its
    ServiceMonitor), else an ephemeral port on 127.0.0.1 (announced in the run directory);
    ValueError naming the variable and an example when it is malformed."""
    text = environ.get(METRICS_LISTEN_ENV, "")
    if not text:
        return ("127.0.0.1", 0)
    host, colon, port = text.rpartition(":")
    if not (colon and host and port.isdigit() and 0 <= int(port) < 65536):
        raise ValueError(f"{METRICS_LISTEN_ENV}={text!r} is not HOST:PORT, e.g. 0.0.0.0:9464")
    return host, int(port)


def configure_process(
    component: str,
    site: str,
    run_dir: Path | None = None,
    *,
    instance: str = "",
    metrics_listen: tuple[str, int] = ("127.0.0.1", 0),
) -> bool:
    """Telemetry for one BFM process (``bfm_observe.configure``): OTLP traces as the
    ``OTEL_*`` variables say, metrics at ``metrics_listen`` (default an ephemeral
    127.0.0.1 port; a pod's site process is given one to expose) announced in the run
    directory's ``targets/``, JSON logs. False when ``BFM_TELEMETRY=off``."""
    if not telemetry_wanted():
        return False
    import bfm_observe  # noqa: PLC0415 - only processes that want telemetry load the SDK

    bfm_observe.configure(
        component=component,
        site=site,
        metrics_host=metrics_listen[0],
        metrics_port=metrics_listen[1],
        targets_file=(
            targets_file(run_dir, site, component, instance) if run_dir is not None else None
        ),
    )
    return True


def shutdown_process() -> None:
    """Flush and stop what ``configure_process`` started (safe when it started nothing)."""
    import bfm_observe  # noqa: PLC0415

    bfm_observe.shutdown()


def tracer() -> trace.Tracer:
    """BFM's tracer (a no-op until ``bfm_observe.configure`` ran in this process)."""
    return trace.get_tracer(TRACER_NAME)


# -- sites and components ----------------------------------------------------------------
SITE_UP = Gauge(
    "bfm_site_up",
    "1 while the leader sees the site's lease renewed in time, else 0 (leader's view).",
    SITE_COMPONENT,
)
COMPONENT_UP = Gauge(
    "bfm_component_up",
    "1 while the component answers its site agent's probes, else 0.",
    SITE_COMPONENT,
)
COMPONENT_RESTARTS = Counter(
    "bfm_component_restarts",
    "Restarts of a crashed component process by its site's supervisor.",
    SITE_COMPONENT,
)

# -- ownership ---------------------------------------------------------------------------
SHARDS_OWNED = Gauge(
    "bfm_shards_owned",
    "Shards of the component owned by the site, as the leader last wrote them.",
    SITE_COMPONENT,
)
EPOCH_MAX = Gauge(
    "bfm_epoch_max",
    "The largest epoch (fencing token) granted for the component; site: the leader's.",
    SITE_COMPONENT,
)
HANDBACK_PENDING = Gauge(
    "bfm_handback_pending_shards",
    "Shards to move to the site for an even split that have not moved yet (leader's view).",
    SITE_COMPONENT,
)
STALE_EPOCH_REFUSALS = Counter(
    "bfm_stale_epoch_refusals",
    "Work refused because it carried an older epoch or came after the grant ran out.",
    (*SITE_COMPONENT, "reason"),
)
REFUSED_DOCUMENTS = Counter(
    "bfm_refused_documents",
    "Store documents refused as damaged or foreign (each key and revision once), by kind.",
    (*SITE_COMPONENT, "kind"),
)

# -- controller and leases ---------------------------------------------------------------
CONTROLLER_IS_LEADER = Gauge(
    "bfm_controller_is_leader",
    "1 while this site's controller replica holds the leader lease.",
    SITE_COMPONENT,
)
LEADER_PRESENT = Gauge(
    "bfm_leader_present",
    "1 while this replica sees a leader lease renewed in time (its own or another's).",
    SITE_COMPONENT,
)
LEASE_RENEWAL_SECONDS = Histogram(
    "bfm_lease_renewal_duration_seconds",
    "Time one lease renewal took (site lease by the agent, leader lease by the controller).",
    SITE_COMPONENT,
    buckets=FAST_BUCKETS_S,
)
STORE_REACHABLE = Gauge(
    "bfm_store_reachable",
    "1 while this process's last coordination-store request got an answer.",
    SITE_COMPONENT,
)
STORE_REQUEST_SECONDS = Histogram(
    "bfm_store_request_duration_seconds",
    "Coordination-store requests by operation and outcome (ok, conflict, unavailable, unknown).",
    (*SITE_COMPONENT, "op", "outcome"),
    buckets=FAST_BUCKETS_S,
)
FAILSAFE_ACTIVE = Gauge(
    "bfm_failsafe_active",
    "1 while the site keeps its ownership frozen without the store (control-plane failsafe).",
    SITE_COMPONENT,
)
FENCED = Gauge(
    "bfm_site_fenced",
    "1 while the site has fenced itself (its lease ran out: it serves nothing).",
    SITE_COMPONENT,
)

# -- decisions ---------------------------------------------------------------------------
FAILOVER_IN_PROGRESS = Gauge(
    "bfm_failover_in_progress",
    "1 from the detection of a failed site or component until its shards are owned again.",
    SITE_COMPONENT,
)
FAILOVERS = Counter(
    "bfm_failovers",
    "Committed ownership decisions by kind (initial, failover, drain, transfer, cancel_drain).",
    (*SITE_COMPONENT, "kind"),
)
DECISION_PHASE_SECONDS = Histogram(
    "bfm_decision_phase_duration_seconds",
    "Time of each phase of a controller decision (detect, decide, fence, record).",
    (*SITE_COMPONENT, "phase"),
    buckets=SLOW_BUCKETS_S,
)
DETECTION_SECONDS = Histogram(
    "bfm_detection_seconds",
    "From a site's last lease renewal (or a component's last good probe) to its detection.",
    SITE_COMPONENT,
    buckets=SLOW_BUCKETS_S,
)
RECOVERY_SECONDS = Histogram(
    "bfm_recovery_seconds",
    "From the detection of a failure to the commit of the ownership that moved its shards.",
    SITE_COMPONENT,
    buckets=SLOW_BUCKETS_S,
)

# -- messages ----------------------------------------------------------------------------
MESSAGES = Counter(
    "bfm_messages",
    "Backbone messages handled, by kind and outcome (acked, refused reason, unreachable).",
    (*SITE_COMPONENT, "kind", "outcome"),
)
MESSAGE_SECONDS = Histogram(
    "bfm_message_duration_seconds",
    "Message latency: producer = first send to ack (retries included); module = admit to "
    "commit; router = forward to answer.",
    (*SITE_COMPONENT, "kind"),
    buckets=MESSAGE_BUCKETS_S,
)

# -- licensing (the leader's view; failover.runtime.license_keeper) ----------------------
LICENSE_STATE = Gauge(
    "bfm_license_state",
    "1 for the system's license state (licensed, grace, unlicensed), 0 for the others; "
    "site: the leader's.",
    (*SITE_COMPONENT, "state"),
)
LICENSE_GRACE_REMAINING_SECONDS = Gauge(
    "bfm_license_grace_remaining_seconds",
    "Seconds of the grace period left (the whole period while licensed, 0 when unlicensed); "
    "site: the leader's.",
    SITE_COMPONENT,
)
LICENSE_DONGLE_VALID = Gauge(
    "bfm_license_dongle_valid",
    "1 while the site presents a valid dongle for this system, else 0; site: the dongle's.",
    SITE_COMPONENT,
)
LICENSE_DONGLE_STATUS = Gauge(
    "bfm_license_dongle_status",
    "1 for what the site's dongle is (valid, missing, expired, tampered, foreign, "
    "malformed), 0 for the rest; site: the dongle's.",
    (*SITE_COMPONENT, "status"),
)
LICENSE_DONGLE_EXPIRY = Gauge(
    "bfm_license_dongle_expiry_timestamp_seconds",
    "When the site's dongle expires (Unix seconds; only for a dongle whose signature "
    "verified); site: the dongle's.",
    SITE_COMPONENT,
)
