"""``kubernetes://`` store URLs: in-cluster config, kubeconfig and context, their errors,
and the runtime and ``bfm status`` on the Kubernetes store.

Against the Kubernetes API double of ``tests/support/kube_double.py`` (kmock's emulator over
real HTTP, extended: a double, not a kube-apiserver). The store's own behaviour is in
``test_kubernetes_store.py``.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from kubernetes.config import incluster_config
from small_system import SmallSystem
from support.kube_double import KubeApiDouble, write_kubeconfig

from failover.adapters import kubernetes_objects as objects
from failover.adapters.fake_clock import FakeClock
from failover.adapters.kubernetes_store import KubernetesStore
from failover.adapters.platform_url import parse_platform_url
from failover.adapters.store_url import StoreUrlError, open_store
from failover.cli.main import run
from failover.core.topology import default_topology
from failover.ports import CoordinationStore, StoreUnavailable
from failover.runtime.documents import LEADER_KEY, lease_key


def _object(double: KubeApiDouble, namespace: str, key: str) -> dict[str, Any]:
    resource = "leases.v1.coordination.k8s.io" if objects.is_lease_key(key) else "configmaps.v1"
    found = double.api.objects[resource, namespace, objects.object_name("bfm", key)]
    assert not found.deleted
    raw: dict[str, Any] = found.raw
    return raw


def _value(store: CoordinationStore, key: str) -> Any:
    got = store.get(key)
    return None if got is None else got.value


@pytest.fixture
def no_cluster_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Neither a pod's service account nor a kubeconfig: HOME is an empty directory."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_runtime_runs_on_it_and_bfm_status_reads_it_by_url(
    double: KubeApiDouble,
    namespace: str,
    no_cluster_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = KubernetesStore(double.configuration(), namespace=namespace)
    SmallSystem(store, FakeClock(), topology=default_topology(shards_per_component=4)).run(20)
    assert objects.kind_of(LEADER_KEY) == objects.LEASE
    assert _object(double, namespace, LEADER_KEY)["spec"]["holderIdentity"] == "w"
    assert _object(double, namespace, lease_key("a"))["kind"] == "Lease"
    store.close()
    (no_cluster_env / ".kube").mkdir()
    write_kubeconfig(no_cluster_env / ".kube" / "config", {"double": double.url}, "double")
    assert run(["status", f"--store=kubernetes://{namespace}", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["leader"]["site"] == "w"
    assert data["ownership"]["eap"]["shards_per_site"] == {"a": 2, "b": 2}


def test_open_store_uses_the_kubeconfig_and_its_context(
    double: KubeApiDouble, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    dead = f"http://127.0.0.1:{_free_port()}"
    context = "arn:aws:eks:eu-1:1:cluster/double"  # the shape of an EKS context name
    config = write_kubeconfig(tmp_path / "kc", {"dead": dead, context: double.url}, "dead")
    monkeypatch.setenv("KUBECONFIG", str(config))
    url = f"kubernetes://{namespace}?context=arn%3Aaws%3Aeks%3Aeu-1%3A1%3Acluster%2Fdouble"
    store = open_store(url)
    assert store.url == url
    store.create("k", {"v": 1})
    with pytest.raises(StoreUnavailable, match=re.escape(dead)):
        open_store(f"kubernetes://{namespace}")  # the current context: nothing listens
    with pytest.raises(StoreUrlError, match="'nope'"):
        open_store(f"kubernetes://{namespace}?context=nope")
    again = open_store(store.url, request_timeout_s=2.0)
    assert _value(again, "k") == {"v": 1}
    store.close()
    again.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_open_store_without_cluster_or_kubeconfig_names_both_and_the_fix(
    no_cluster_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StoreUrlError) as raised:
        open_store("kubernetes://bfm")
    message = str(raised.value)
    assert "KUBERNETES_SERVICE_HOST is not set" in message
    assert "~/.kube/config" in message
    assert "set KUBECONFIG" in message
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # a pod without its token
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(StoreUrlError, match="service account cannot be used"):
        open_store("kubernetes://bfm")


def test_open_store_prefers_the_pods_service_account(
    double: KubeApiDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("a-token")
    (tmp_path / "ca.crt").write_text("not a real certificate")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    port = double.url.rsplit(":", 1)[1]
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", {"d": double.url}, "d")))
    # In-cluster means HTTPS to the service address; the double speaks plain HTTP, so the
    # failure shows which configuration was chosen.
    with pytest.raises(StoreUnavailable, match=f"https://127.0.0.1:{port}"):
        open_store("kubernetes://bfm")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("kubernetes://", "names no namespace"),
        ("kubernetes://Bad_NS", "bad namespace"),
        ("kubernetes://" + "n" * 64, "bad namespace"),
        ("kubernetes://bfm/prefix", "takes no path"),
        ("kubernetes://bfm#x", "takes no path"),
        ("kubernetes://bfm?timeout=1", "unknown option 'timeout'"),
        ("kubernetes://bfm?context=", "is empty"),
        ("kubernetes://bfm?context=a&context=b", "given twice"),
        ("kubernetes://bfm?instance=Run_2", "bad instance"),
        ("kubernetes://bfm?context", "cannot read the options"),
    ],
)
def test_malformed_kubernetes_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(StoreUrlError, match=re.escape(says)) as raised:
        open_store(url)
    assert repr(url) in str(raised.value)


def test_bfm_status_on_a_kubernetes_url_without_a_cluster_is_a_usage_error(
    no_cluster_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["status", "--store=kubernetes://bfm"]) == 2
    err = capsys.readouterr().err
    assert "KUBECONFIG" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("local", "unknown platform"),
        ("kubernetes://", "must name one namespace"),
        ("kubernetes://a/b", "must name one namespace"),
        ("kubernetes://Bad_NS", "bad namespace"),
        ("kubernetes://bfm?zone=a", "unknown option 'zone'"),
        ("kubernetes://bfm?image=", "is empty"),
        ("kubernetes://bfm?name=x&name=y", "given twice"),
        ("kubernetes://bfm?name=Bad_Name", "bad name"),
    ],
)
def test_malformed_platform_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(StoreUrlError, match=re.escape(says)):
        parse_platform_url(url)


def test_a_platform_url_names_namespace_and_options() -> None:
    assert parse_platform_url("kubernetes://bfm?context=c1&image=r.example/bfm&name=two") == (
        "bfm",
        {"context": "c1", "image": "r.example/bfm", "name": "two"},
    )


def test_bfm_site_run_with_a_bad_platform_is_a_usage_error_before_starting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run(["site", "run", "--site=a", "--store=memory://", "--platform=kubernetes://a/b"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--platform" in err and "namespace" in err and "Traceback" not in err


def test_bfm_site_run_on_the_kubernetes_platform_without_a_cluster_names_the_fix(
    no_cluster_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        [
            "site",
            "run",
            "--site=w",
            "--store=memory://",
            "--platform=kubernetes://bfm",
            "--duration=1s",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "KUBECONFIG" in err and "Traceback" not in err
