"""A real alerting pipeline for one run directory: Prometheus, Alertmanager, the node
exporter and a recording webhook, all on 127.0.0.1 (e2e tests and benchmarks).

``AlertStack(run_dir).start()`` writes ``<run_dir>/alerting/prometheus.yml`` from the
shipped ``collectors/prometheus.yml`` (the run's ``targets/*.json``, the repository's
``alerts/rules/*.yaml``, the ports it chose) and ``alertmanager.yml`` from the shipped
``alerts/alertmanager.yml`` (every webhook receiver pointed at the recording webhook as
``/<receiver name>``), starts the Debian binaries on free ports and waits, bounded, until
each answers, Prometheus has found Alertmanager, loaded the rules and scraped the node
exporter, and, when a ``BfmWatchdog`` rule is loaded, until its notification reached the
webhook: the whole chain works. ``stop()`` ends what it started, by PID. The webhook
records every notification with its wall-clock receive time, comparable with the fault
timeline of a report (``FaultEvent.at_s``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml

from failover.adapters.local_platform import child_setup

REPO = Path(__file__).resolve().parents[2]
SHIPPED_PROMETHEUS = REPO / "collectors" / "prometheus.yml"
SHIPPED_ALERTMANAGER = REPO / "alerts" / "alertmanager.yml"
WATCHDOG = "BfmWatchdog"
BINARIES = {  # binary -> the Debian package that installs it
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-node-exporter": "prometheus-node-exporter",
}
RESEND_DELAY = "5s"
"""Prometheus's ``--rules.alert.resend-delay`` (default 1m): how soon a firing alert is
sent again, e.g. one dropped because Alertmanager was not found yet (Prometheus finds it
~5 s after it starts) or did not answer; alerts carry an end time of 4 x this (20 s)."""
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.1
HTTP_TIMEOUT_S = 5.0


class AlertStackError(RuntimeError):
    """A binary is missing, or a server did not become ready in time (the sentence says
    which, with the end of its log)."""


def missing_packages() -> list[str]:
    """The Debian packages whose binaries the stack needs and cannot find."""
    return [package for binary, package in BINARIES.items() if shutil.which(binary) is None]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (each held until all are chosen)."""
    held = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return [int(sock.getsockname()[1]) for sock in held]
    finally:
        for sock in held:
            sock.close()


# -- the configurations --------------------------------------------------------------------


def write_prometheus_config(
    run_dir: Path,
    out: Path,
    *,
    alertmanager: str,
    node_exporter: str,
    rule_files: Sequence[Path] | None = None,
    shipped: Path = SHIPPED_PROMETHEUS,
) -> Path:
    """The shipped config made concrete for ``run_dir``: its intervals unchanged, the
    ``bfm`` job's file_sd paths under ``run_dir``, rule files absolute (``rule_files``
    instead when given), the node job and Alertmanager at the given ``host:port``."""
    doc: dict[str, Any] = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    if rule_files is None:
        doc["rule_files"] = [os.path.normpath(shipped.parent / f) for f in doc["rule_files"]]
    else:
        doc["rule_files"] = [str(f) for f in rule_files]
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    missing = {"bfm", "node"} - set(jobs)
    if missing:
        raise ValueError(f"{shipped} has no scrape job {', '.join(sorted(missing))}")
    for sd in jobs["bfm"].get("file_sd_configs", []):
        sd["files"] = [str(run_dir / f) for f in sd["files"]]
    jobs["node"]["static_configs"] = [{"targets": [node_exporter]}]
    doc["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# Written by failover.chaos.alerting from {shipped}.\n"
        + yaml.safe_dump(doc, sort_keys=False),
        encoding="utf-8",
    )
    return out


def write_alertmanager_config(
    out: Path, webhook_url: str, *, shipped: Path = SHIPPED_ALERTMANAGER
) -> Path:
    """The shipped config with every webhook receiver's URL replaced by
    ``<webhook_url>/<receiver name>``; routes, timings and inhibitions unchanged."""
    doc: dict[str, Any] = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    for receiver in doc.get("receivers", []):
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{webhook_url}/{receiver['name']}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# Written by failover.chaos.alerting from {shipped}.\n"
        + yaml.safe_dump(doc, sort_keys=False),
        encoding="utf-8",
    )
    return out


# -- the webhook ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One webhook post from Alertmanager: when it arrived (``time.time()``), which
    receiver sent it (the URL path), and its JSON body (``alerts``, ``status``, ...)."""

    received_s: float
    receiver: str
    payload: dict[str, Any]

    def alerts(self, alertname: str, status: str | None = None, **labels: str) -> list[Any]:
        """The alerts of this notification with that name, status and labels."""
        return [
            alert
            for alert in self.payload.get("alerts", [])
            if alert.get("labels", {}).get("alertname") == alertname
            and (status is None or alert.get("status") == status)
            and all(alert.get("labels", {}).get(k) == v for k, v in labels.items())
        ]


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that answers 200 to every POST and records it."""

    def __init__(self) -> None:
        self._received: list[Notification] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"unparsed": body.decode("utf-8", "replace")}
                receiver.record(Notification(time.time(), self.path.strip("/"), payload))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the records are the log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=STOP_TIMEOUT_S)
        self._server.server_close()

    def record(self, notification: Notification) -> None:
        with self._changed:
            self._received.append(notification)
            self._changed.notify_all()

    def notifications(self) -> list[Notification]:
        with self._changed:
            return list(self._received)

    def wait_for(
        self, matches: Callable[[Notification], bool], *, timeout_s: float
    ) -> Notification | None:
        """The first notification (already received or arriving within ``timeout_s``)
        for which ``matches`` holds; None when none did in time."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = next((n for n in self._received if matches(n)), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                self._changed.wait(left)


# -- the stack -----------------------------------------------------------------------------


class AlertStack:
    """Prometheus, Alertmanager, node exporter and webhook for ``run_dir`` (see the
    module's docstring). Use as a context manager, or ``start()`` then ``stop()``."""

    def __init__(
        self,
        run_dir: Path,
        *,
        work_dir: Path | None = None,
        rule_files: Sequence[Path] | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        exemplars: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.exemplars = exemplars  # exemplar storage: scrapes in OpenMetrics keep trace ids
        self.work_dir = work_dir or run_dir / "alerting"
        self.rule_files = rule_files
        self.ready_timeout_s = ready_timeout_s
        self.webhook = WebhookReceiver()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        ports = free_ports(3)
        self.prometheus_url, self.alertmanager_url, self.node_exporter_url = (
            f"http://127.0.0.1:{port}" for port in ports
        )

    def __enter__(self) -> AlertStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> AlertStack:
        """Start everything and wait until the pipeline works; AlertStackError (after
        stopping what it started) when a binary is missing or a server is not ready."""
        if missing := missing_packages():
            raise AlertStackError(
                "the alert stack needs Debian packages that are not installed; as root: "
                f"DEBIAN_FRONTEND=noninteractive apt-get install -y {' '.join(missing)}"
            )
        (self.run_dir / "targets").mkdir(parents=True, exist_ok=True)  # file_sd watches it
        for data in ("prometheus-data", "alertmanager-data"):
            # Fresh storage: alerts held from an earlier start would never resolve.
            shutil.rmtree(self.work_dir / data, ignore_errors=True)
        try:
            self.webhook.start()
            self._start_servers()
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_servers(self) -> None:
        am_config = write_alertmanager_config(self.work_dir / "alertmanager.yml", self.webhook.url)
        prom_config = write_prometheus_config(
            self.run_dir,
            self.work_dir / "prometheus.yml",
            alertmanager=_host_port(self.alertmanager_url),
            node_exporter=_host_port(self.node_exporter_url),
            rule_files=self.rule_files,
        )
        self._spawn(
            "node-exporter",
            "prometheus-node-exporter",
            f"--web.listen-address={_host_port(self.node_exporter_url)}",
        )
        self._spawn(
            "alertmanager",
            "prometheus-alertmanager",
            f"--config.file={am_config}",
            f"--storage.path={self.work_dir / 'alertmanager-data'}",
            f"--web.listen-address={_host_port(self.alertmanager_url)}",
            "--cluster.listen-address=",  # no gossip: one instance
        )
        self._spawn(
            "prometheus",
            "prometheus",
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={self.work_dir / 'prometheus-data'}",
            f"--web.listen-address={_host_port(self.prometheus_url)}",
            f"--rules.alert.resend-delay={RESEND_DELAY}",
            *(["--enable-feature=exemplar-storage"] if self.exemplars else []),
        )

    def _spawn(self, name: str, binary: str, *args: str) -> None:
        with (self.work_dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(  # noqa: S603 - a Debian binary, our arguments
                [binary, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=child_setup(),  # noqa: PLW1509 - they die with the test or benchmark
            )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        checks: list[tuple[str, str, Callable[[], bool]]] = [
            ("node-exporter", "serve", lambda: self._get_ok(f"{self.node_exporter_url}/metrics")),
            ("alertmanager", "be ready", lambda: self._get_ok(f"{self.alertmanager_url}/-/ready")),
            ("prometheus", "be ready", lambda: self._get_ok(f"{self.prometheus_url}/-/ready")),
            ("prometheus", "find Alertmanager", self._alertmanager_found),
            ("prometheus", "load the alerting rules", self._rules_loaded),
            (
                "prometheus",
                "scrape the node exporter",
                lambda: bool(self.query('up{job="node"} == 1')),
            ),
        ]
        for name, what, ready in checks:
            self._wait(name, what, deadline, ready)
        if WATCHDOG in self.alert_rule_names():
            left_s = max(deadline - time.monotonic(), 0.0)
            if self.webhook.wait_for(lambda n: bool(n.alerts(WATCHDOG)), timeout_s=left_s) is None:
                raise AlertStackError(
                    f"no {WATCHDOG} notification reached the webhook within "
                    f"{self.ready_timeout_s:g} s of the start; see "
                    f"{self.work_dir}/prometheus.log and alertmanager.log"
                )

    def _wait(self, name: str, what: str, deadline: float, ready: Callable[[], bool]) -> None:
        proc = self.procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AlertStackError(
                    f"{name} exited with code {proc.returncode} before it could {what}; "
                    f"its log ends: {self._log_tail(name)}"
                )
            try:
                if ready():
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass  # not listening, or not answering properly yet
            time.sleep(POLL_S)
        raise AlertStackError(
            f"{name} did not {what} within {self.ready_timeout_s:g} s; "
            f"its log ends: {self._log_tail(name)}"
        )

    def _log_tail(self, name: str, chars: int = 1500) -> str:
        try:
            return (self.work_dir / f"{name}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    @staticmethod
    def _get_ok(url: str) -> bool:
        return requests.get(url, timeout=HTTP_TIMEOUT_S).status_code == 200

    def _alertmanager_found(self) -> bool:
        body = self._prometheus_api("alertmanagers")
        urls = [am["url"] for am in body["activeAlertmanagers"]]
        return any(url.startswith(self.alertmanager_url) for url in urls)

    def _rules_loaded(self) -> bool:
        # [] for a stack that only routes the alerts posted to it
        return self.rule_files == [] or bool(self._prometheus_api("rules")["groups"])

    def _prometheus_api(self, path: str, **params: str) -> Any:
        answer = requests.get(
            f"{self.prometheus_url}/api/v1/{path}", params=params, timeout=HTTP_TIMEOUT_S
        )
        body = answer.json()
        if body.get("status") != "success":
            raise ValueError(f"Prometheus /api/v1/{path}: {body}")
        return body["data"]

    # -- what tests and benchmarks ask -------------------------------------------------------

    def query(self, expr: str) -> list[Any]:
        """The instant vector of ``expr`` (Prometheus's ``result`` list)."""
        result: list[Any] = self._prometheus_api("query", query=expr)["result"]
        return result

    def alert_rule_names(self) -> set[str]:
        """The names of the alerting rules Prometheus has loaded."""
        groups = self._prometheus_api("rules", type="alert")["groups"]
        return {rule["name"] for group in groups for rule in group["rules"]}

    def prometheus_alerts(self) -> list[Any]:
        """The alerts Prometheus's rules hold now, pending or firing (``/api/v1/alerts``)."""
        alerts: list[Any] = self._prometheus_api("alerts")["alerts"]
        return alerts

    def alertmanager_alerts(self) -> list[Any]:
        """Every alert Alertmanager holds, with ``status.state`` and ``status.inhibitedBy``
        (``/api/v2/alerts``, silenced and inhibited ones included)."""
        answer = requests.get(f"{self.alertmanager_url}/api/v2/alerts", timeout=HTTP_TIMEOUT_S)
        answer.raise_for_status()
        alerts: list[Any] = answer.json()
        return alerts

    def post_alerts(self, label_sets: Sequence[Mapping[str, str]], *, lasting_s: float) -> None:
        """Post firing alerts straight to Alertmanager, as Prometheus would, each with an
        end ``lasting_s`` from now (routing and inhibition tests without rules)."""
        now = datetime.now(UTC)
        alerts: list[dict[str, Any]] = [
            {
                "labels": dict(labels),
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(seconds=lasting_s)).isoformat(),
            }
            for labels in label_sets
        ]
        answer = requests.post(
            f"{self.alertmanager_url}/api/v2/alerts", json=alerts, timeout=HTTP_TIMEOUT_S
        )
        answer.raise_for_status()

    def stop(self) -> None:
        """SIGTERM every server it started (Prometheus first, so it sends nothing to a
        stopped Alertmanager), SIGKILL one that does not stop; then the webhook."""
        for name in ("prometheus", "alertmanager", "node-exporter"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        self.webhook.stop()


def _host_port(url: str) -> str:
    return url.removeprefix("http://")
