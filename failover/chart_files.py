"""Copy the shipped sources the Helm chart reads into ``helm/bfm/files/`` (`python -m
failover.chart_files`), and tell whether the copies are current.

Helm reads only files inside the chart, so the chart carries copies: the OpenTelemetry
Collector configs (``collectors/*.yaml``), the alert rules (``alerts/rules/*.yaml``), the
Alertmanager routes (``alerts/alertmanager.yml``), the dashboards rendered to JSON by
``failover.dashboards_build`` and the RBAC rules of
``failover.adapters.kubernetes_rbac.role_rules`` (``rbac.yaml``). The copies are generated,
never edited: ``tests/unit/test_helm_chart.py`` fails when one differs from its source.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from failover.adapters.kubernetes_rbac import COMPONENTS, NODE_LEASE_NAMESPACE, role_rules

CHART_NAME = "bfm"
FILES_DIR = "files"
RBAC_FILE = "rbac.yaml"
FIX = "python -m failover.chart_files"
_RBAC_HEADER = (
    f"# Generated from failover.adapters.kubernetes_rbac.role_rules by `{FIX}`; do not edit.\n"
)


def repo_root() -> Path:
    """The checkout holding ``failover/`` and the shipped folders."""
    return Path(__file__).resolve().parents[1]


def chart_dir(root: Path | None = None) -> Path:
    return (root or repo_root()) / "helm" / CHART_NAME


def rbac_rules() -> dict[str, list[dict[str, object]]]:
    """The grants the chart renders: the site processes' in BFM's namespace, on the node
    Leases and in the cluster; the reference backbone's component pods' in BFM's namespace."""
    return {
        "namespace": role_rules(namespaced=True, namespace=""),
        "nodeLeases": role_rules(namespaced=True, namespace=NODE_LEASE_NAMESPACE),
        "cluster": role_rules(namespaced=False),
        "components": role_rules(namespaced=True, namespace="", account=COMPONENTS),
    }


def expected_files(root: Path | None = None) -> dict[str, str]:
    """Every file ``files/`` should hold (its path inside ``files/`` -> its text)."""
    from failover import dashboards_build  # noqa: PLC0415 - grafanalib is slow to import

    root = root or repo_root()
    wanted: dict[str, str] = {}
    for source in sorted((root / "collectors").glob("*.yaml")):
        wanted[f"collectors/{source.name}"] = source.read_text(encoding="utf-8")
    for source in sorted((root / "alerts" / "rules").glob("*.yaml")):
        wanted[f"alerts/rules/{source.name}"] = source.read_text(encoding="utf-8")
    alertmanager = root / "alerts" / "alertmanager.yml"
    wanted["alerts/alertmanager.yml"] = alertmanager.read_text(encoding="utf-8")
    for built in dashboards_build.build_all(root / "dashboards"):
        wanted[f"dashboards/{built.uid}.json"] = built.json_text()
    wanted[RBAC_FILE] = _RBAC_HEADER + yaml.safe_dump(rbac_rules(), sort_keys=False)
    return wanted


def current_files(chart: Path) -> dict[str, str]:
    """What ``files/`` holds now."""
    base = chart / FILES_DIR
    if not base.is_dir():
        return {}
    return {
        path.relative_to(base).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(base.rglob("*"))
        if path.is_file()
    }


def differences(expected: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """One line per file that is missing, changed or left over."""
    lines = [f"missing: {name}" for name in sorted(set(expected) - set(current))]
    lines += [
        f"differs: {name}"
        for name in sorted(set(expected) & set(current))
        if expected[name] != current[name]
    ]
    lines += [f"left over: {name}" for name in sorted(set(current) - set(expected))]
    return lines


def sync(root: Path | None = None) -> list[str]:
    """Write the copies, remove left-overs; returns what changed (``differences``)."""
    chart = chart_dir(root)
    wanted = expected_files(root)
    changed = differences(wanted, current_files(chart))
    base = chart / FILES_DIR
    for name, text in wanted.items():
        target = base / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    for name in set(current_files(chart)) - set(wanted):
        (base / name).unlink()
    return changed


def main() -> int:
    changed = sync()
    for line in changed:
        print(line)
    print(f"{chart_dir() / FILES_DIR}: {len(changed)} file(s) updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
