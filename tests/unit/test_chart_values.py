"""The chart's values that matter, asserted field by field (in the style of helm-unittest):
RBAC equals the adapters' list, the witness tolerates the control plane, each site is
pinned to its zone, budgets, labels, securityContext, resources within the site VM,
dashboards, alert rules and collector configs carried whole."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from support.chart_render import (
    CHART,
    ROOT,
    VM_CPU_M,
    VM_MEMORY_B,
    cpu_m,
    memory_b,
    of_kind,
    render,
)

from failover.adapters.kubernetes_rbac import NODE_LEASE_NAMESPACE, role_rules
from failover.dashboards_build import build_all

ALL_ON = {"backbone": {"enabled": True}, "logstore": {"enabled": True}}
WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def all_on() -> list[dict[str, Any]]:
    return render(ALL_ON)


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in WORKLOADS
    }


# -- RBAC ----------------------------------------------------------------------------------


def test_the_roles_grant_exactly_the_adapters_list(default: list[dict[str, Any]]) -> None:
    roles = of_kind(default, "Role")
    assert roles["bfm"]["metadata"]["namespace"] == "bfm"
    assert roles["bfm"]["rules"] == role_rules(namespaced=True, namespace="")
    node_leases = roles["bfm-bfm-node-leases"]
    assert node_leases["metadata"]["namespace"] == NODE_LEASE_NAMESPACE
    assert node_leases["rules"] == role_rules(namespaced=True, namespace=NODE_LEASE_NAMESPACE)
    assert of_kind(default, "ClusterRole")["bfm-bfm-nodes"]["rules"] == role_rules(namespaced=False)


def test_bfms_account_is_bound_to_those_roles_and_nothing_else(
    all_on: list[dict[str, Any]],
) -> None:
    bound = {
        (b["kind"], b["roleRef"]["name"])
        for b in all_on
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
        for s in b["subjects"]
        if s == {"kind": "ServiceAccount", "name": "bfm", "namespace": "bfm"}
    }
    assert bound == {
        ("RoleBinding", "bfm"),
        ("RoleBinding", "bfm-bfm-node-leases"),
        ("ClusterRoleBinding", "bfm-bfm-nodes"),
    }
    for spec in pod_specs(all_on).values():
        if spec.get("serviceAccountName") == "bfm":
            assert spec["containers"][0]["args"][:2] == ["site", "run"]


def test_no_verb_beyond_the_adapters_and_the_collectors_read_only_grant(
    all_on: list[dict[str, Any]],
) -> None:
    every_verb = {
        verb
        for role in all_on
        if role["kind"] in ("Role", "ClusterRole")
        for rule in role["rules"]
        for verb in rule["verbs"]
    }
    adapters = {
        verb
        for rules in (role_rules(), role_rules(namespace=NODE_LEASE_NAMESPACE))
        for rule in rules + role_rules(namespaced=False)
        for verb in rule["verbs"]
    }
    assert every_verb == adapters | {"watch"}
    collector = of_kind(all_on, "ClusterRole")["bfm-bfm-otel-agent"]["rules"]
    assert collector == [
        {
            "apiGroups": [""],
            "resources": ["pods", "namespaces", "nodes"],
            "verbs": ["get", "list", "watch"],
        }
    ]


# -- sites -----------------------------------------------------------------------------------


def test_one_site_process_per_zone_and_the_witness_tolerates_the_control_plane(
    default: list[dict[str, Any]],
) -> None:
    deployments = of_kind(default, "Deployment")
    for site, zone in (("a", "A"), ("b", "B"), ("w", "W")):
        deployment = deployments[f"bfm-site-{site}"]
        spec = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert spec["nodeSelector"] == {"topology.kubernetes.io/zone": zone}
        args = spec["containers"][0]["args"]
        assert f"--site={site}" in args
        assert "--store=kubernetes://bfm?instance=bfm" in args
        peers = {a for a in args if a.startswith("--peer=")}
        assert peers == {
            f"--peer={p}=bfm-site-{p}.bfm.svc:7000" for p in ("a", "b", "w") if p != site
        }
        tolerations = spec.get("tolerations", [])
        control_plane = {
            "key": "node-role.kubernetes.io/control-plane",
            "operator": "Exists",
            "effect": "NoSchedule",
        }
        assert (control_plane in tolerations) == (site == "w")


def test_the_backbone_runs_through_the_platform_only_when_enabled(
    default: list[dict[str, Any]], all_on: list[dict[str, Any]]
) -> None:
    def args(objects: list[dict[str, Any]]) -> list[str]:
        spec = of_kind(objects, "Deployment")["bfm-site-a"]["spec"]["template"]["spec"]
        return list(spec["containers"][0]["args"])

    assert not any(a.startswith("--platform") for a in args(default))
    assert (
        "--platform=kubernetes://bfm?image=ghcr.io/hemisphere/bfm:0.1.0&name=bfm"
        "&template=/etc/bfm/pod-template/pod-template.yaml"
    ) in args(all_on)
    services = of_kind(all_on, "Service")
    for site in ("a", "b"):
        assert services[f"bfm-backbone-{site}"]["spec"]["selector"] == {
            "bfm.hemisphere.io/platform": "bfm",
            "bfm.hemisphere.io/site": site,
            "bfm.hemisphere.io/component": "backbone",
            "bfm.hemisphere.io/serving": "true",
        }
    assert "bfm-backbone-w" not in services
    endpoints = of_kind(all_on, "ConfigMap")["bfm-endpoints"]["data"]
    mine = json.loads(endpoints["endpoints-a.json"])
    assert mine["sites"]["a"]["heartbeat"] == ["0.0.0.0", 7000]
    assert mine["sites"]["b"]["heartbeat"] == ["bfm-site-b.bfm.svc", 7000]
    assert mine["sites"]["w"]["modules"] == {}


def test_pod_disruption_budgets(default: list[dict[str, Any]]) -> None:
    budgets = of_kind(default, "PodDisruptionBudget")
    assert budgets["bfm-site"]["spec"]["minAvailable"] == 2  # two of three keep a majority
    assert budgets["bfm-otel-gateway"]["spec"]["minAvailable"] == 1
    single = render({"otel": {"gateway": {"replicas": 1}}})
    assert "bfm-otel-gateway" not in of_kind(single, "PodDisruptionBudget")


def test_replicated_workloads_spread_over_zones(default: list[dict[str, Any]]) -> None:
    for name, deployment in of_kind(default, "Deployment").items():
        spreads = deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
        if deployment["spec"]["replicas"] > 1:
            assert any(
                c["topologyKey"] == "topology.kubernetes.io/zone"
                and c["whenUnsatisfiable"] == "DoNotSchedule"
                for c in spreads
            ), name


def test_every_object_carries_the_standard_labels(all_on: list[dict[str, Any]]) -> None:
    for obj in all_on:
        labels = obj["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/part-of",
            "helm.sh/chart",
            "app.kubernetes.io/component",
        ):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"


# The OTel agent DaemonSets, and nothing else, run as uid 0: kubelet and the runtime write
# /var/log/pods/**.log root-owned 0640/0600, which no other user can read
# (otel.agent.runAsRoot; test_the_otel_agent_runs_as_root_with_nothing_else_granted).
RUNS_AS_ROOT = frozenset(f"DaemonSet/bfm-otel-agent-{s}" for s in "abw")


def test_every_container_is_locked_down(all_on: list[dict[str, Any]]) -> None:
    assert set(pod_specs(all_on)) >= RUNS_AS_ROOT  # the exception names real workloads
    for name, spec in pod_specs(all_on).items():
        pod = spec["securityContext"]
        if name not in RUNS_AS_ROOT:
            assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            if name not in RUNS_AS_ROOT:
                assert context["runAsNonRoot"] is True, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name


def _runs_as_root(spec: dict[str, Any]) -> bool:
    contexts = [spec["securityContext"]] + [
        c["securityContext"] for c in spec["containers"] + spec.get("initContainers", [])
    ]
    return any(c.get("runAsUser") == 0 or c.get("runAsNonRoot") is not True for c in contexts)


def test_the_otel_agent_runs_as_root_with_nothing_else_granted(
    all_on: list[dict[str, Any]],
) -> None:
    """Root only to read the node's root-owned pod logs through the owner bits: no
    capability (so no DAC override), read-only root, no escalation, not privileged,
    RuntimeDefault, the host's files mounted read-only. Every other workload: non-root."""
    specs = pod_specs(all_on)
    assert {name for name, spec in specs.items() if _runs_as_root(spec)} == RUNS_AS_ROOT
    for name in sorted(RUNS_AS_ROOT):
        spec = specs[name]
        assert spec["securityContext"] == {
            "runAsNonRoot": False,
            "runAsUser": 0,
            "runAsGroup": 0,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name
        (container,) = spec["containers"]
        assert container["securityContext"] == {
            "runAsNonRoot": False,
            "runAsUser": 0,
            "runAsGroup": 0,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name
        host_volumes = {v["name"] for v in spec["volumes"] if "hostPath" in v}
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert host_volumes == {"pod-logs", "hostfs"}, name
        assert all(mounts[v]["readOnly"] is True for v in host_volumes), name
        assert mounts["pod-logs"]["mountPath"] == "/var/log/pods", name
        assert not spec.get("hostPID") and not spec.get("hostNetwork"), name


def test_the_otel_agent_stays_non_root_when_asked() -> None:
    specs = pod_specs(render({"otel": {"agent": {"runAsRoot": False}}}))
    assert not any(_runs_as_root(spec) for spec in specs.values())
    agent = specs["DaemonSet/bfm-otel-agent-a"]
    assert agent["securityContext"]["runAsUser"] == 10001
    assert agent["containers"][0]["securityContext"]["runAsNonRoot"] is True


def test_resources_fit_the_site_vm(all_on: list[dict[str, Any]]) -> None:
    """Every container has requests and limits; what may land in one zone (its site
    process, its agent, every gateway replica, the log store) asks for at most half of
    the VM, leaving the rest to the backbone's components."""
    requested_cpu = requested_memory = 0
    for name, spec in pod_specs(all_on).items():
        for container in spec["containers"]:
            resources = container["resources"]
            assert cpu_m(resources["limits"]["cpu"]) <= VM_CPU_M, name
            assert memory_b(resources["limits"]["memory"]) <= VM_MEMORY_B, name
            assert resources["requests"]["memory"] == resources["limits"]["memory"], name
            if name.endswith(("-b", "-w")):
                continue  # one site process and one agent per zone: count zone a's
            replicas = 2 if "gateway" in name else 1
            requested_cpu += replicas * cpu_m(resources["requests"]["cpu"])
            requested_memory += replicas * memory_b(resources["requests"]["memory"])
    assert requested_cpu <= VM_CPU_M // 2
    assert requested_memory <= VM_MEMORY_B // 2


def test_every_workload_has_a_network_policy(all_on: list[dict[str, Any]]) -> None:
    policies = of_kind(all_on, "NetworkPolicy").values()
    for name, obj in ((o["metadata"]["name"], o) for o in all_on if o["kind"] in WORKLOADS):
        labels = obj["spec"]["template"]["metadata"]["labels"]
        covering = [
            p
            for p in policies
            if all(labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())
        ]
        assert covering, f"no NetworkPolicy selects {name}"
        assert all(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in covering)
    site = of_kind(all_on, "NetworkPolicy")["bfm-site"]["spec"]
    assert {"protocol": "UDP", "port": 7000} in site["ingress"][0]["ports"]


# -- monitoring ------------------------------------------------------------------------------


def test_dashboards_are_configmaps_for_grafanas_sidecar(default: list[dict[str, Any]]) -> None:
    expected = {d.uid: d.json_text() for d in build_all(ROOT / "dashboards")}
    maps = [
        m
        for m in of_kind(default, "ConfigMap").values()
        if "grafana_dashboard" in m["metadata"]["labels"]
    ]
    assert {m["metadata"]["labels"]["grafana_dashboard"] for m in maps} == {"1"}
    carried = {k.removesuffix(".json"): v for m in maps for k, v in m["data"].items()}
    assert carried == expected


def test_the_prometheus_rules_hold_every_rule_of_alerts_rules(
    default: list[dict[str, Any]],
) -> None:
    rules = of_kind(default, "PrometheusRule")
    for source in sorted((ROOT / "alerts" / "rules").glob("*.yaml")):
        expected = yaml.safe_load(source.read_text())["groups"]
        assert rules[f"bfm-{source.stem}"]["spec"]["groups"] == expected, source.name


def test_the_alertmanager_snippet_is_the_shipped_file(default: list[dict[str, Any]]) -> None:
    data = of_kind(default, "ConfigMap")["bfm-alertmanager"]["data"]
    assert data == {"alertmanager.yml": (ROOT / "alerts" / "alertmanager.yml").read_text()}


def test_the_collector_configmaps_hold_exactly_the_files_of_collectors(
    default: list[dict[str, Any]],
) -> None:
    maps = of_kind(default, "ConfigMap")
    carried = {**maps["bfm-otel-agent"]["data"], **maps["bfm-otel-gateway"]["data"]}
    expected = {p.name: p.read_text() for p in sorted((ROOT / "collectors").glob("*.yaml"))}
    assert carried == expected
    agents = {n: o for n, o in of_kind(default, "DaemonSet").items()}
    assert set(agents) == {"bfm-otel-agent-a", "bfm-otel-agent-b", "bfm-otel-agent-w"}
    witness = agents["bfm-otel-agent-w"]["spec"]["template"]["spec"]
    assert witness["nodeSelector"] == {"topology.kubernetes.io/zone": "W"}
    env = {e["name"]: e.get("value") for e in witness["containers"][0]["env"]}
    assert env["BFM_SITE"] == "w"
    assert witness["containers"][0]["args"] == ["--config=/conf/otel-agent.yaml"]


def test_the_service_monitor_scrapes_the_site_processes(default: list[dict[str, Any]]) -> None:
    monitor = of_kind(default, "ServiceMonitor")["bfm-site"]["spec"]
    assert monitor["endpoints"][0]["port"] == "metrics"
    assert monitor["endpoints"][0]["honorLabels"] is True
    for service in (of_kind(default, "Service")[f"bfm-site-{s}"] for s in "abw"):
        labels = service["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in monitor["selector"]["matchLabels"].items())
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def test_prometheus_reaches_each_gateway_replicas_exporter(default: list[dict[str, Any]]) -> None:
    """The gateway's `prometheus` exporter port (from collectors/otel-gateway.yaml) is a
    container port, on the gateway Service and on the headless Service whose name the
    `otel-gateway` job of collectors/prometheus.yml resolves, and the NetworkPolicy lets
    the monitoring namespace in to it."""
    collector = yaml.safe_load((ROOT / "collectors" / "otel-gateway.yaml").read_text())
    port = int(collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1])
    template = of_kind(default, "Deployment")["bfm-otel-gateway"]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    services = of_kind(default, "Service")
    for service in (services["bfm-otel-gateway"], services["bfm-otel-gateway-metrics"]):
        spec = service["spec"]
        selector = spec["selector"]
        assert all(template["metadata"]["labels"].get(k) == v for k, v in selector.items())
        assert any(p["port"] == port and named[p["targetPort"]] == port for p in spec["ports"])
    headless = services["bfm-otel-gateway-metrics"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    scrape = yaml.safe_load((ROOT / "collectors" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    (discovery,) = jobs["otel-gateway"]["dns_sd_configs"]
    assert discovery["names"] == ["bfm-otel-gateway-metrics.bfm.svc"]
    policy = of_kind(default, "NetworkPolicy")["bfm-otel-gateway"]["spec"]
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    assert any(
        monitoring in rule["from"] and {"protocol": "TCP", "port": port} in rule["ports"]
        for rule in policy["ingress"]
    )


def test_the_log_store_is_optional_with_retention_from_values() -> None:
    assert "bfm-logstore" not in of_kind(render(), "Deployment")
    objects = render(
        {"logstore": {"enabled": True, "retention": "3d", "persistence": {"enabled": False}}}
    )
    spec = of_kind(objects, "Deployment")["bfm-logstore"]["spec"]["template"]["spec"]
    assert "--retention=3d" in spec["containers"][0]["args"]
    assert "emptyDir" in spec["volumes"][0]
    site = of_kind(objects, "Deployment")["bfm-site-a"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in site["containers"][0]["env"]}
    assert env["BFM_LOKI_URL"] == "http://bfm-logstore.bfm.svc:3100"


def test_the_image_tag_defaults_to_the_app_version_and_a_digest_pins_it() -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

    def image(objects: list[dict[str, Any]]) -> str:
        spec = of_kind(objects, "Deployment")["bfm-site-a"]["spec"]["template"]["spec"]
        return str(spec["containers"][0]["image"])

    assert image(render()) == f"ghcr.io/hemisphere/bfm:{app_version}"
    digest = "sha256:" + "a" * 64
    assert image(render({"image": {"digest": digest}})) == f"ghcr.io/hemisphere/bfm@{digest}"


def test_the_collectors_own_metrics_are_scraped(default: list[dict[str, Any]]) -> None:
    """Every collector pod's otelcol_* port (collectors/*.yaml service.telemetry) is a
    target of the collectors' ServiceMonitor, and the monitoring namespace may reach it."""
    monitor = of_kind(default, "ServiceMonitor")["bfm-collectors"]
    selector = monitor["spec"]["selector"]
    (endpoint,) = monitor["spec"]["endpoints"]
    services = of_kind(default, "Service")

    def selected(labels: dict[str, str]) -> bool:
        if not selector["matchLabels"].items() <= labels.items():
            return False
        return all(labels.get(e["key"]) in e["values"] for e in selector["matchExpressions"])

    with_port = {
        name
        for name, service in services.items()
        if selected(service["metadata"]["labels"])
        and endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    }
    assert with_port == {"bfm-otel-agent", "bfm-otel-gateway"}  # each pod scraped once
    policies = of_kind(default, "NetworkPolicy")
    for name, spec in pod_specs(default).items():
        if "otel" not in name:
            continue
        (container,) = spec["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["telemetry"] == 8888, name
        policy = policies["bfm-otel-agent" if "agent" in name else "bfm-otel-gateway"]
        admitted = {
            p["port"]
            for rule in policy["spec"]["ingress"]
            if any("namespaceSelector" in peer for peer in rule.get("from", []))
            for p in rule["ports"]
        }
        assert 8888 in admitted, name
