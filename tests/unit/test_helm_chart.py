"""The Helm chart renders offline, lints strictly and every manifest is valid Kubernetes.

Rendering is in-process (helm_python embeds the Helm SDK); every manifest is validated
with kubernetes-validate for 1.30 and 1.32, where a missing schema (an unknown kind or
apiVersion) is a failure, except the Prometheus Operator's CRD kinds, checked against
the CRD schemas prometheus-operator publishes (tests/support/crd_schemas/), where a field
the CRD does not declare (which the API server would silently drop) is a failure too, and
their metadata as Kubernetes' own ObjectMeta. Also: the chart's copies of the shipped
files are current, the Containerfile's inputs exist, and `bfm k8s render` prints the
manifests or says clearly what is wrong.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from support import crd_schemas

from failover import chart_files
from failover.cli.main import run

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "bfm"
KUBE_VERSIONS = ("1.30.0", "1.32.0")
ALL_ON = {
    "backbone": {"enabled": True},
    "logstore": {"enabled": True},
    "networkPolicy": {"apiServer": {"cidrs": ["10.96.0.1/32"]}},
    "monitoring": {"dashboards": {"namespace": "grafana"}},
}
VALUE_SETS = {
    "defaults": {},
    "all-on": ALL_ON,
    "logstore-emptydir": {
        "logstore": {"enabled": True, "persistence": {"enabled": False}},
        "otel": {"gateway": {"replicas": 1}},
    },
}


def render_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = helm_python.Chart.load(CHART).render(
        values, name="bfm", namespace="bfm", is_install=True
    )
    objects = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render_objects(VALUE_SETS[request.param])


@pytest.mark.parametrize("kube_version", [f"v{v}" for v in KUBE_VERSIONS])
@pytest.mark.parametrize("values", [{}, ALL_ON], ids=["defaults", "all-on"])
def test_lint_strict_finds_nothing(kube_version: str, values: dict[str, Any]) -> None:
    report = helm_python.lint(CHART, values, strict=True, kube_version=kube_version)
    assert report["errors"] == []
    assert report["messages"] == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_is_valid_kubernetes(
    objects: list[dict[str, Any]], kube_version: str
) -> None:
    checked_crds = set()
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        checked = obj
        if obj["kind"] in crd_schemas.KINDS:
            problems = crd_schemas.problems(obj)
            assert not problems, f"{where}: {'; '.join(problems)}"
            checked_crds.add(obj["kind"])
            # The CRD leaves metadata to the API server: check it as Kubernetes' ObjectMeta.
            checked = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
        try:
            kubernetes_validate.validate(checked, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as err:
            pytest.fail(f"{where}: {err.message}")
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{where}: {err.message} at {list(err.path)}")
    assert checked_crds == crd_schemas.KINDS


def test_an_unknown_kind_would_fail_validation() -> None:
    """The check above cannot pass by accident: a removed apiVersion has no schema."""
    pdb = {"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "x"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(pdb, "1.30.0", strict=True)


def test_the_crd_check_refuses_what_the_api_server_would_drop_or_reject() -> None:
    """The CRD branch above cannot pass by accident: a misspelled field fails it."""
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "x"},
        "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expression": "up"}]}]},
    }
    assert crd_schemas.problems(bad) == [
        "$.spec.groups[0].rules[0]: 'expr' is a required property",
        "$.spec.groups[0].rules[0].expression: not in the published PrometheusRule schema;"
        " the API server would drop it",
    ]


def test_the_crd_check_refuses_a_rendered_object_with_a_misspelled_field() -> None:
    (monitor,) = [
        o
        for o in render_objects(ALL_ON)
        if o["kind"] == "ServiceMonitor" and o["metadata"]["name"] == "bfm-site"
    ]
    assert crd_schemas.problems(monitor) == []
    monitor["spec"]["endpoints"][0]["intervall"] = monitor["spec"]["endpoints"][0].pop("interval")
    assert crd_schemas.problems(monitor) == [
        "$.spec.endpoints[0].intervall: not in the published ServiceMonitor schema;"
        " the API server would drop it"
    ]


def test_the_charts_copies_of_the_shipped_files_are_current() -> None:
    expected = chart_files.expected_files(ROOT)
    for name in ("collectors/otel-agent.yaml", "collectors/otel-gateway.yaml", "rbac.yaml"):
        assert name in expected, f"{name} has no source; the collectors/ configs must exist"
    problems = chart_files.differences(expected, chart_files.current_files(CHART))
    assert not problems, (
        f"helm/bfm/files/ is stale ({'; '.join(problems)}); run `{chart_files.FIX}`"
    )


def test_the_containerfile_installs_the_projects_wheel_from_existing_inputs() -> None:
    text = (ROOT / "Containerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    assert args["BFM_VERSION"] == project["version"]
    wheel = f"dist/{project['name']}-{project['version']}-py3-none-any.whl"
    sources = []
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE):
        sources += [s.replace("${BFM_VERSION}", args["BFM_VERSION"]) for s in line.split()[:-1]]
    assert sources == [wheel]  # the one input, made by the documented `pip wheel` step
    assert "pip wheel --no-deps --wheel-dir dist ." in text
    for source in sources:
        assert (ROOT / source).exists() or source == wheel, source
    assert "--no-index --find-links" in text
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert 'ENTRYPOINT ["bfm"]' in text


def test_bfm_k8s_render_prints_the_manifests(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["k8s", "render", "--set", "backbone.enabled=true", "-n", "video"]) == 0
    out = capsys.readouterr().out
    docs = [d for d in yaml.safe_load_all(out) if d]
    sources = re.findall(r"^# Source: (\S+)$", out, re.MULTILINE)
    assert sources == sorted(sources)
    assert "bfm/templates/NOTES.txt" not in sources
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Role", "PrometheusRule", "NetworkPolicy"} <= kinds
    assert all(d["metadata"].get("namespace") in (None, "video", "kube-node-lease") for d in docs)


def test_bfm_k8s_render_with_a_values_file_and_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("logstore:\n  enabled: true\n")
    assert run(["k8s", "render", "--values", str(values), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "bfm" / "templates" / "logstore.yaml").is_file()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--set", "sites.c.zone=C"], "additional properties 'c' not allowed"),
        (["--set", "runAsUser=0"], "/runAsUser"),
        (["--set", "site.metrics.port=http"], "values.schema.json"),
        (["--values", "/nonexistent/values.yaml"], "cannot read the values file"),
        (["--chart", "/nonexistent"], "no Helm chart at /nonexistent"),
        (["--release", "Bad_Name"], "release name"),
    ],
)
def test_bfm_k8s_render_refuses_bad_input_with_exit_2(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["k8s", "render", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith("bfm: ") and says in err and "\n" not in err
