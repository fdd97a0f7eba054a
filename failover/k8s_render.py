"""Render BFM's Helm chart offline, without the helm binary (`bfm k8s render`).

``helm_python`` embeds the Helm SDK: the chart is loaded, the values are merged over its
``values.yaml`` and checked against ``values.schema.json``, and the templates render in
this process; no cluster is contacted. Every problem is a ``RenderError`` whose message
is one sentence naming the thing and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_RELEASE = "bfm"
DEFAULT_NAMESPACE = "bfm"
NOTES = "/NOTES.txt"  # helm prints it after an install; it is no manifest


class RenderError(Exception):
    """The chart could not be rendered; the message says why and what to do."""


def chart_path(explicit: Path | None = None) -> Path:
    """The chart folder: ``explicit``, else ``helm/bfm`` of the shipped assets."""
    from failover.assets import AssetNotFound, asset_dir  # noqa: PLC0415

    if explicit is not None:
        path = explicit
    else:
        try:
            path = asset_dir("helm") / "bfm"
        except AssetNotFound as err:
            raise RenderError(str(err)) from None
    if not (path / "Chart.yaml").is_file():
        raise RenderError(f"no Helm chart at {path} (no Chart.yaml there); is BFM installed whole?")
    return path


def _helm() -> Any:
    """The embedded Helm SDK (``helm-python-sdk``, BFM's ``k8s`` extra); RenderError naming
    the fix when it is not installed."""
    try:
        import helm_python  # noqa: PLC0415 - loads the embedded Helm SDK
    except ImportError:
        raise RenderError(
            "rendering the chart needs the Helm SDK that BFM's k8s extra installs: "
            "pip install 'bfm[k8s]' (the offline bundle's wheelhouse carries it)"
        ) from None
    return helm_python


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` deep-merged over ``base`` (as helm merges -f files and --set)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def values_from(files: Sequence[Path] = (), sets: Sequence[str] = ()) -> dict[str, Any]:
    """The user's values: each ``--values`` file in order, then each ``--set key=value``."""
    helm_python = _helm()
    values: dict[str, Any] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise RenderError(
                f"cannot read the values file {path}: {err.strerror or err}; check the path"
            ) from None
        try:
            loaded = helm_python.values_from_yaml(text)
        except helm_python.HelmError as err:
            raise RenderError(
                f"the values file {path} is not valid YAML: {_one_line(err)}"
            ) from None
        values = merge(values, loaded or {})
    for expression in sets:
        try:
            values = merge(values, helm_python.parse_set_string(expression))
        except helm_python.HelmError as err:
            raise RenderError(
                f"--set {expression!r} is not key=value (e.g. backbone.enabled=true): "
                f"{_one_line(err)}"
            ) from None
    return values


def render(
    values: Mapping[str, Any] | None = None,
    *,
    chart: Path | None = None,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
) -> dict[str, str]:
    """The rendered manifests, template path -> text (empty templates and NOTES.txt left
    out)."""
    helm_python = _helm()
    path = chart_path(chart)
    try:
        helm_python.validate_release_name(release)
    except helm_python.HelmError:
        raise RenderError(
            f"the release name {release!r} is not valid: lowercase letters, digits and '-', "
            "at most 53 characters"
        ) from None
    try:
        rendered = helm_python.Chart.load(path).render(
            dict(values or {}), name=release, namespace=namespace, is_install=True
        )
    except helm_python.HelmValuesError as err:
        raise RenderError(
            f"the values do not fit the chart's values.schema.json: {_one_line(err)}"
        ) from None
    except helm_python.HelmError as err:
        raise RenderError(f"the chart at {path} does not render: {_one_line(err)}") from None
    return {
        name: text
        for name, text in sorted(rendered.items())
        if text.strip() and not name.endswith(NOTES)
    }


def documents(rendered: Mapping[str, str]) -> str:
    """The manifests as one YAML stream, by template path, each headed by its source."""
    parts = []
    for name in sorted(rendered):
        body = rendered[name].strip("\n")
        if body.startswith("---"):
            body = body[3:].lstrip("\n")
        parts.append(f"---\n# Source: {name}\n{body}\n")
    return "".join(parts)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()).rstrip(".")
