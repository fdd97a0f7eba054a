"""Three real ``bfm site run --platform kubernetes://bfm`` processes on the Kubernetes store.

The sites reach the Kubernetes API double (``tests/support/kube_double.py``; a double, as
no kube-apiserver can be installed here) through a kubeconfig, as they would a cluster.
Their components are pods, which the kubelet double (``tests/support/kubelet_double.py``)
runs as real ``python -m failover component run`` processes on the nodes of zones A, B
and W. Real UDP heartbeats on 127.0.0.1. Times are bounded by generous ceilings only.

The pods work as the chart runs them: a pod template file (``template=``) gives each pod
BFM_GRANTS_URL, and the site processes serve their grants over HTTP (``--grants-listen``)
while their grants files are written where no pod looks: a pod admits work only under
grants it asked its site process for.

One run: the sites place every component evenly with every pod running; a producer's
messages through site a's router are all acknowledged (the checker: nothing lost, no stale
epoch accepted); a component's container killed with -9 is restarted by its site's
supervisor as a new pod; site a's node loses power (its processes die, its node Lease
stops) and the node-lifecycle controller marks it NotReady: b takes every shard, then the
leader puts the out-of-service taint on a's node and a's pods are deleted; power back: the
taint comes off, a's site process starts again and gets its half back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from support.kube_double import KubeApiDouble, add_site_nodes, write_kubeconfig
from support.kubelet_double import KubeletDouble

from failover.adapters.kubernetes_pods import (
    COMPONENT_LABEL,
    OUT_OF_SERVICE_TAINT,
    SITE_LABEL,
)
from failover.adapters.kubernetes_store import KubernetesStore
from failover.chaos.run_check import judge
from failover.core.fencing import Ownership
from failover.core.topology import default_topology
from failover.runtime.documents import ownership_key
from failover.workload.endpoints import allocate

NAMESPACE = "bfm"
SHARDS = 4
TOPOLOGY = default_topology(shards_per_component=SHARDS)
CEILING_S = 90.0


def wait_until(check: Callable[[], bool], what: str, *, ceiling_s: float = CEILING_S) -> None:
    deadline_s = time.monotonic() + ceiling_s
    while time.monotonic() < deadline_s:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {ceiling_s} s: {what}")


class Cluster:
    """The double, its kubelets, three site processes and a store client of our own."""

    def __init__(self, tmp: Path, double: KubeApiDouble) -> None:
        self.tmp, self.double = tmp, double
        self.run_dir = tmp / "run"
        self.run_dir.mkdir()
        allocate(f"kubernetes://{NAMESPACE}", TOPOLOGY).save(self.run_dir)
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", {"double": double.url}, "double")
        # The sites and their pods (the components open the store too) reach the double.
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.env.pop("KUBERNETES_SERVICE_HOST", None)
        self.kubelet = KubeletDouble(double, NAMESPACE, env=self.env, poll_interval_s=0.2)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.store = KubernetesStore(double.configuration(), namespace=NAMESPACE)
        self.core = client.CoreV1Api(client.ApiClient(double.configuration()))
        self.grants_ports = {site: free_port() for site in TOPOLOGY.workers}

    def platform_url(self, site: str) -> str:
        """The platform with a pod template as the chart's: the grants over HTTP."""
        if site not in self.grants_ports:
            return f"kubernetes://{NAMESPACE}"
        template = self.tmp / f"pod-template-{site}.json"
        url = f"http://127.0.0.1:{self.grants_ports[site]}/grants"
        env = [{"name": "BFM_GRANTS_URL", "value": url}]
        template.write_text(json.dumps({"spec": {"containers": [{"env": env}]}}))
        return f"kubernetes://{NAMESPACE}?template={template}"

    def grants_options(self, site: str) -> list[str]:
        """Grants served over HTTP; the file where no pod looks for it."""
        if site not in self.grants_ports:
            return []
        return [
            f"--grants-listen=127.0.0.1:{self.grants_ports[site]}",
            f"--grants-file={self.tmp / f'elsewhere-grants-{site}.json'}",
        ]

    def start(self, site: str) -> None:
        with (self.tmp / f"site-{site}.log").open("ab") as log:
            self.procs[site] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "failover",
                    "site",
                    "run",
                    f"--site={site}",
                    f"--run-dir={self.run_dir}",
                    f"--platform={self.platform_url(site)}",
                    *self.grants_options(site),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
            )

    def kill9(self, site: str) -> None:
        proc = self.procs.pop(site)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()

    def log(self, site: str) -> str:
        return (self.tmp / f"site-{site}.log").read_text(errors="replace")[-3000:]

    def counts(self) -> dict[str, dict[str, int]]:
        result = {}
        for c in TOPOLOGY.components:
            got = self.store.get(ownership_key(c))
            if got is not None:
                result[c] = Ownership.from_doc(got.value).counts(TOPOLOGY.workers)
        return result

    def even(self) -> bool:
        half = {"a": SHARDS // 2, "b": SHARDS // 2}
        counts = self.counts()
        return len(counts) == len(TOPOLOGY.components) and all(v == half for v in counts.values())

    def all_at(self, site: str) -> bool:
        counts = self.counts()
        return len(counts) == len(TOPOLOGY.components) and all(
            v.get(site) == SHARDS for v in counts.values()
        )

    def running_pods(self, site: str) -> dict[str, str]:
        """component -> the name of its pod that runs (a process) at ``site``."""
        listed = self.core.list_namespaced_pod(NAMESPACE, label_selector=f"{SITE_LABEL}={site}")
        return {
            p.metadata.labels[COMPONENT_LABEL]: p.metadata.name
            for p in listed.items
            if p.status.phase == "Running"
            and not p.metadata.deletion_timestamp
            and self.kubelet.pid(p.metadata.name) is not None
        }

    def pods(self, site: str) -> list[str]:
        listed = self.core.list_namespaced_pod(NAMESPACE, label_selector=f"{SITE_LABEL}={site}")
        return [p.metadata.name for p in listed.items]

    def tainted(self, node: str) -> bool:
        taints = self.core.read_node(node).spec.taints or []
        return any(t.key == OUT_OF_SERVICE_TAINT["key"] for t in taints)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def produce(cluster: Cluster, *, rate: int, duration_s: int) -> dict[str, int]:
    """A producer through site a's router for ``duration_s``; its stats."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "failover",
            "produce",
            f"--run-dir={cluster.run_dir}",
            f"--rate={rate}",
            f"--duration={duration_s}s",
            "--site=a",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=cluster.env,
        timeout=CEILING_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stats: dict[str, int] = json.loads(done.stdout)
    return stats


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    double = KubeApiDouble().start()
    made: Cluster | None = None
    try:
        add_site_nodes(double, NAMESPACE, TOPOLOGY.site_names)
        made = Cluster(tmp_path, double)
        made.kubelet.start()
        yield made
    finally:
        if made is not None:
            made.stop_all()
            made.store.close()
            made.kubelet.stop()
        double.stop()


def test_sites_run_their_components_as_pods_and_survive_a_node_loss(cluster: Cluster) -> None:
    for site in TOPOLOGY.site_names:
        cluster.start(site)
    components = set(TOPOLOGY.components)
    try:
        wait_until(
            lambda: (
                all(set(cluster.running_pods(s)) == components for s in TOPOLOGY.workers)
                and cluster.even()
            ),
            "every component a running pod at a and b, and an even split",
        )
    except AssertionError:
        raise AssertionError(f"site a's log:\n{cluster.log('a')}") from None
    # The pods admit work under the grants they ask their site processes for.
    assert not list(cluster.run_dir.glob("grants-*.json"))  # no file for them to read
    stats = produce(cluster, rate=100, duration_s=4)
    report = judge(cluster.run_dir)
    print(json.dumps({"producer": stats, "report": report.to_json()}))
    assert stats["sent"] == stats["acked"] > 200
    assert report.acked == stats["acked"] and report.acked_lost == 0
    assert report.stale_epoch_accepts == 0 and report.violations == []
    # A crashed container: its site's supervisor starts a new pod.
    crashed = cluster.running_pods("a")["eap"]
    pid = cluster.kubelet.pid(crashed)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: cluster.running_pods("a").get("eap") not in (None, crashed),
        "a new pod for a's eap",
    )
    # Site a's node loses power; later the node-lifecycle controller marks it NotReady.
    before = cluster.pods("a")
    cluster.kubelet.node_down("node-a")
    cluster.kill9("a")
    wait_until(lambda: cluster.all_at("b"), "every shard at b")
    assert not cluster.tainted("node-a")  # Kubernetes does not know yet
    cluster.kubelet.set_node_ready("node-a", "Unknown")
    wait_until(lambda: cluster.tainted("node-a"), "node-a tainted out-of-service")
    wait_until(lambda: not set(before) & set(cluster.pods("a")), "a's pods released")
    assert not cluster.tainted("node-b")
    # Power back: the taint comes off, then a's site process returns and gets its half.
    cluster.kubelet.node_up("node-a")
    wait_until(lambda: not cluster.tainted("node-a"), "node-a untainted")
    cluster.start("a")
    wait_until(
        lambda: set(cluster.running_pods("a")) == components and cluster.even(),
        "a's pods running again and its half back",
    )
