"""The reference backbone's component pods as the chart makes them: the platform's own pod
(failover/adapters/kubernetes_pods.py) with the chart's pod template file added, exactly as
a site process would create it, validated as Kubernetes 1.30 and 1.32 would and held to
the chart's rules (locked down, its own read-only account, the grants reachable through
the NetworkPolicies, resources within the site VM)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pytest
import yaml
from support.chart_render import CHART, VM_CPU_M, VM_MEMORY_B, cpu_m, memory_b, of_kind, render

from failover.adapters import kubernetes_pods as pods
from failover.adapters.kubernetes_pod_overlay import checked_overlay
from failover.adapters.kubernetes_rbac import COMPONENTS, role_rules
from failover.core.topology import default_topology

WORKERS = ("a", "b")
KUBE_VERSIONS = ("1.30.0", "1.32.0")


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    return render({"backbone": {"enabled": True}, "logstore": {"enabled": True}})


def site_container(chart: list[dict[str, Any]], site: str) -> dict[str, Any]:
    deployment = of_kind(chart, "Deployment")[f"bfm-site-{site}"]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def option(container: dict[str, Any], name: str) -> str | None:
    for arg in container["args"]:
        if arg.startswith(f"--{name}="):
            return str(arg.split("=", 1)[1])
    return None


def component_pods(chart: list[dict[str, Any]], site: str) -> list[dict[str, Any]]:
    """Every pod the site process of ``site`` would create, as it would create it."""
    container = site_container(chart, site)
    platform = urlsplit(option(container, "platform") or "")
    query = {k: v[0] for k, v in parse_qs(platform.query).items()}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == query["template"])
    templates = of_kind(chart, "ConfigMap")["bfm-pod-templates"]["data"]
    overlay = checked_overlay(yaml.safe_load(templates[mount["subPath"]]))
    template = pods.PodTemplate(
        platform=query["name"],
        image=query["image"],
        extra_args=(f"--run-dir={option(container, 'run-dir')}",),
        overlay=overlay,
    )
    return [
        template.body(pods.pod_name(site, c), site, c, "1.0.0", serving=True)
        for c in default_topology().components
    ]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_component_pod_is_valid_kubernetes(
    chart: list[dict[str, Any]], kube_version: str
) -> None:
    for site in WORKERS:
        for made in component_pods(chart, site):
            pod = {**made, "metadata": {**made["metadata"], "namespace": "bfm"}}
            try:
                kubernetes_validate.validate(pod, kube_version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{pod['metadata']['name']}: {err.message} at {list(err.path)}")


def test_a_component_pod_is_locked_down_and_has_a_writable_run_directory(
    chart: list[dict[str, Any]],
) -> None:
    for site in WORKERS:
        for pod in component_pods(chart, site):
            spec = pod["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["runAsUser"] > 0
            (container,) = spec["containers"]
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            run_dir = next(a for a in container["args"] if a.startswith("--run-dir="))
            run_dir = run_dir.split("=", 1)[1]
            assert run_dir in mounts and "/tmp" in mounts  # written to: ledger, targets
            endpoints = mounts[f"{run_dir}/endpoints.json"]
            assert endpoints["subPath"] == f"endpoints-{site}.json" and endpoints["readOnly"]
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts[run_dir]["name"]]
            assert pod["spec"]["nodeSelector"] == {"topology.kubernetes.io/zone": site.upper()}


def test_a_component_pod_asks_its_own_site_process_for_its_grants(
    chart: list[dict[str, Any]],
) -> None:
    services = of_kind(chart, "Service")
    for site in WORKERS:
        listen = option(site_container(chart, site), "grants-listen")
        assert listen is not None, f"site {site} serves no grants"
        port = int(listen.rsplit(":", 1)[1])
        ports = {p["name"]: p["port"] for p in services[f"bfm-site-{site}"]["spec"]["ports"]}
        assert ports["grants"] == port
        for pod in component_pods(chart, site):
            env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
            assert env["BFM_GRANTS_URL"] == f"http://bfm-site-{site}.bfm.svc:{port}/grants"
            assert env["BFM_BIND_HOST"] == "0.0.0.0"
            assert env["BFM_SITE"] == site  # the platform's own, kept
    assert option(site_container(chart, "w"), "grants-listen") is None  # no components


def test_the_components_account_reads_and_nothing_more(chart: list[dict[str, Any]]) -> None:
    roles, bindings = of_kind(chart, "Role"), of_kind(chart, "RoleBinding")
    assert roles["bfm-components"]["rules"] == role_rules(account=COMPONENTS)
    verbs = {v for rule in roles["bfm-components"]["rules"] for v in rule["verbs"]}
    assert verbs <= {"get", "list", "watch"}
    subjects = bindings["bfm-components"]["subjects"]
    assert subjects == [{"kind": "ServiceAccount", "name": "bfm-components", "namespace": "bfm"}]
    bound_elsewhere = [
        name
        for name, binding in bindings.items()
        if name != "bfm-components"
        and any(s["name"] == "bfm-components" for s in binding["subjects"])
    ]
    assert bound_elsewhere == []
    for site in WORKERS:
        for pod in component_pods(chart, site):
            assert pod["spec"]["serviceAccountName"] == "bfm-components"


def _admits(rules: list[dict[str, Any]], labels: dict[str, str], port: int) -> bool:
    """Whether a rule of ``rules`` lets a pod with ``labels`` through on ``port``."""
    for rule in rules:
        peers = rule.get("from", rule.get("to"))
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        if peers is None:
            return True
        for peer in peers:
            wanted = (peer.get("podSelector") or {}).get("matchLabels")
            in_namespace = wanted is not None and "namespaceSelector" not in peer
            if in_namespace and wanted.items() <= labels.items():
                return True
    return False


def test_the_network_policies_let_the_grants_and_the_traffic_through(
    chart: list[dict[str, Any]],
) -> None:
    policies = of_kind(chart, "NetworkPolicy")
    site_policy, component_policy = policies["bfm-site"], policies["bfm-components"]
    site_labels = of_kind(chart, "Deployment")["bfm-site-a"]["spec"]["template"]["metadata"][
        "labels"
    ]
    pod = component_pods(chart, "a")[0]
    labels = pod["metadata"]["labels"]
    assert component_policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    grants = int((option(site_container(chart, "a"), "grants-listen") or "").rsplit(":", 1)[1])
    assert _admits(component_policy["spec"]["egress"], site_labels, grants)
    assert _admits(site_policy["spec"]["ingress"], labels, grants)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    router, module = values["backbone"]["routerPort"], values["backbone"]["modulePort"]
    ingress = component_policy["spec"]["ingress"]
    assert _admits(ingress, {"any": "client"}, router)  # clients reach the routers
    assert not _admits(ingress, {"any": "client"}, module)  # but not the modules
    assert _admits(ingress, labels, module) and _admits(ingress, site_labels, module)
    assert _admits(site_policy["spec"]["egress"], labels, module)  # the agent's probes
    assert not _admits(site_policy["spec"]["ingress"], {"any": "client"}, grants)


def test_a_worker_site_with_its_components_fits_the_site_vm(
    chart: list[dict[str, Any]],
) -> None:
    for site in WORKERS:
        containers = [site_container(chart, site)] + [
            p["spec"]["containers"][0] for p in component_pods(chart, site)
        ]
        cpu = sum(cpu_m(c["resources"]["requests"]["cpu"]) for c in containers)
        memory = sum(memory_b(c["resources"]["limits"]["memory"]) for c in containers)
        assert cpu <= VM_CPU_M // 2, f"site {site} requests {cpu}m of {VM_CPU_M}m"
        assert memory <= VM_MEMORY_B // 4, f"site {site} may use {memory} B"


def test_prometheus_scrapes_every_component_pod(chart: list[dict[str, Any]]) -> None:
    monitor = of_kind(chart, "ServiceMonitor")["bfm-components"]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = {
        name: service
        for name, service in of_kind(chart, "Service").items()
        if wanted.items() <= service["metadata"]["labels"].items()
    }
    components = default_topology().components
    assert set(selected) == {f"bfm-{s}-{c}" for s in WORKERS for c in components}
    (endpoint,) = monitor["spec"]["endpoints"]
    policy = of_kind(chart, "NetworkPolicy")["bfm-components"]["spec"]["ingress"]
    for site in WORKERS:
        for pod in component_pods(chart, site):
            env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
            port = int(env["BFM_METRICS_LISTEN"].rsplit(":", 1)[1])
            component = pod["metadata"]["labels"][pods.COMPONENT_LABEL]
            service = selected[f"bfm-{site}-{component}"]["spec"]
            by_name = {p["name"]: p for p in service["ports"]}
            assert by_name[endpoint["port"]]["targetPort"] == port
            assert service["selector"].items() <= pod["metadata"]["labels"].items()
            from_monitoring = [
                r
                for r in policy
                if port in [p["port"] for p in r.get("ports", [])]
                and any("namespaceSelector" in peer for peer in r.get("from", []))
            ]
            assert from_monitoring, f"Prometheus cannot reach {component}'s /metrics"


def test_the_component_pods_run_the_charts_own_image(chart: list[dict[str, Any]]) -> None:
    """The reference components are in BFM's image: every version runs it (a tag per
    component version would name images nobody built)."""
    for site in WORKERS:
        image = site_container(chart, site)["image"]
        for pod in component_pods(chart, site):
            assert pod["spec"]["containers"][0]["image"] == image
