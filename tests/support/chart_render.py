"""The Helm chart rendered offline (helm-python-sdk) for the chart tests, and the units
its resources are written in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "bfm"
VM_CPU_M = 2000  # the datasheet's site VM: 2 vCPU, 10 GB
VM_MEMORY_B = 10 * 10**9


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders with ``values`` (release bfm in namespace bfm)."""
    rendered = helm_python.Chart.load(CHART).render(
        values or {}, name="bfm", namespace="bfm", is_install=True
    )
    return [
        doc
        for name, text in sorted(rendered.items())
        if not name.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def cpu_m(text: str | int) -> int:
    text = str(text)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def memory_b(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)
