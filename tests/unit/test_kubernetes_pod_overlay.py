"""The pod template file: what an installation adds to the platform's component pods
(failover/adapters/kubernetes_pod_overlay.py, the platform URL's template= option)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from failover.adapters import kubernetes_pods as pods
from failover.adapters.kubernetes_pod_overlay import apply_overlay, checked_overlay, load_overlay
from failover.adapters.platform_url import check_platform_url
from failover.adapters.store_url import StoreUrlError

OVERLAY: dict[str, Any] = {
    "metadata": {"labels": {"team": "video"}, "annotations": {"note": "trial"}},
    "spec": {
        "serviceAccountName": "bfm-components",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
        "volumes": [{"name": "run", "emptyDir": {}}],
        "containers": [
            {
                "resources": {"requests": {"cpu": "100m"}},
                "securityContext": {"readOnlyRootFilesystem": True},
                "volumeMounts": [{"name": "run", "mountPath": "/var/lib/bfm/run"}],
                "env": [{"name": "BFM_GRANTS_URL", "value": "http://bfm-site-a:9465/grants"}],
            }
        ],
    },
}


def body(overlay: dict[str, Any]) -> dict[str, Any]:
    template = pods.PodTemplate(overlay=overlay)
    return template.body("bfm-a-eep-abc123", "a", "eep", "1.2.3", serving=True)


def test_the_overlay_adds_to_the_pod_and_keeps_what_the_platform_sets() -> None:
    plain, pod = body({}), body(OVERLAY)
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert spec["serviceAccountName"] == "bfm-components"
    assert spec["automountServiceAccountToken"] is False
    assert spec["volumes"] == [{"name": "run", "emptyDir": {}}]
    assert container["resources"] == {"requests": {"cpu": "100m"}}
    assert container["volumeMounts"][0]["mountPath"] == "/var/lib/bfm/run"
    assert pod["metadata"]["labels"]["team"] == "video"
    # the platform's own fields are as without the overlay
    for key in ("restartPolicy", "nodeSelector", "terminationGracePeriodSeconds"):
        assert spec[key] == plain["spec"][key]
    for key in ("name", "image", "command", "args"):
        assert container[key] == plain["spec"]["containers"][0][key]
    assert plain["metadata"]["labels"].items() <= pod["metadata"]["labels"].items()
    names = [e["name"] for e in container["env"]]
    assert names[-1] == "BFM_GRANTS_URL" and "BFM_SITE" in names
    assert "BFM_GRANTS_URL" not in str(plain)  # nothing leaks into templates without it


def test_the_overlay_is_not_changed_by_applying_it() -> None:
    overlay = checked_overlay(OVERLAY)
    pod = body(overlay)
    pod["spec"]["volumes"].append({"name": "more"})
    assert body(overlay)["spec"]["volumes"] == [{"name": "run", "emptyDir": {}}]


@pytest.mark.parametrize(
    ("overlay", "problem"),
    [
        ({"spec": {"restartPolicy": "Always"}}, r"spec.restartPolicy is set by the platform"),
        ({"spec": {"nodeSelector": {"topology.kubernetes.io/zone": "B"}}}, "zone"),
        ({"spec": {"containers": [{"image": "evil:1"}]}}, r"containers\[0\].image is set"),
        ({"spec": {"containers": [{"args": ["x"]}]}}, r"containers\[0\].args"),
        (
            {"spec": {"containers": [{"env": [{"name": "BFM_SITE", "value": "b"}]}]}},
            r"env already has \['BFM_SITE'\]",
        ),
        ({"metadata": {"labels": {"bfm.hemisphere.io/site": "b"}}}, "bfm.hemisphere.io/site"),
    ],
)
def test_an_overlay_may_not_change_what_the_platform_sets(
    overlay: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        body(checked_overlay(overlay))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "must be a mapping"),
        ({"kind": "Pod"}, r"unknown top-level field\(s\) \['kind'\]"),
        ({"metadata": {"name": "x"}}, "only labels and annotations"),
        ({"metadata": {"labels": {"port": 80}}}, "quote numbers"),
        ({"spec": []}, "spec must be a mapping"),
        ({"spec": {"containers": [{}, {}]}}, "must be one container"),
        ({"spec": {"containers": [{"name": "sidecar"}]}}, "platform names the container"),
    ],
)
def test_a_malformed_overlay_is_refused_naming_the_field(data: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        checked_overlay(data)


def test_the_file_is_read_as_yaml_or_json_and_named_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "pod.yaml"
    good.write_text("spec:\n  containers:\n    - resources: {limits: {memory: 64Mi}}\n")
    assert load_overlay(good)["spec"]["containers"][0]["resources"]["limits"]["memory"] == "64Mi"
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_overlay(empty) == {}
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(ValueError, match=f"{bad} is not YAML or JSON"):
        load_overlay(bad)
    with pytest.raises(ValueError, match=r"cannot read the pod template .*missing\.yaml"):
        load_overlay(tmp_path / "missing.yaml")


def test_the_platform_url_checks_its_template_before_anything_starts(tmp_path: Path) -> None:
    clash = tmp_path / "clash.json"
    clash.write_text('{"spec": {"restartPolicy": "Always"}}')
    with pytest.raises(StoreUrlError, match=r"template= of .*restartPolicy is set by the platform"):
        check_platform_url(f"kubernetes://bfm?template={clash}")
    with pytest.raises(StoreUrlError, match="cannot read the pod template"):
        check_platform_url(f"kubernetes://bfm?template={tmp_path}/nope.json")
    fine = tmp_path / "fine.json"
    fine.write_text('{"spec": {"containers": [{"env": [{"name": "X", "value": "1"}]}]}}')
    check_platform_url(f"kubernetes://bfm?template={fine}")  # no error


def test_a_clash_inside_a_list_item_is_not_missed() -> None:
    pod = {"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}]}}
    with pytest.raises(ValueError, match=r"env already has \['A'\]"):
        apply_overlay(pod, {"spec": {"containers": [{"env": [{"name": "A", "value": "2"}]}]}})
