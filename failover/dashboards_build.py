"""Render the grafanalib dashboards in ``dashboards/*.dashboard.py`` to Grafana JSON, and
optionally to Kubernetes ConfigMaps for Grafana's dashboard sidecar (`bfm dashboards build`).

A dashboard file follows grafanalib's convention: running it defines a module-level
``dashboard``. It may import its sibling modules (``import panels``): the source folder is
on ``sys.path`` while it runs, and those modules are forgotten afterwards, so a second
folder in the same process gets its own. Every problem is a ``DashboardError`` whose
message names the file and the fix.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from grafanalib._gen import DashboardEncoder  # type: ignore[import-untyped]

from failover.assets import AssetNotFound, asset_dir

SUFFIX = ".dashboard.py"
CONFIGMAP_LABEL = "grafana_dashboard"  # what Grafana's sidecar (k8s-sidecar) looks for
CONFIGMAP_DIR = "configmaps"
CONFIGMAP_MAX_BYTES = 1024 * 1024  # the API server refuses larger ConfigMaps
_UID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_UID_MAX_CHARS = 40


class DashboardError(Exception):
    """A dashboard that cannot be built or written; the message names the file and the fix."""


@dataclass(frozen=True)
class BuiltDashboard:
    """One dashboard rendered: where it came from and its Grafana JSON model."""

    source: Path
    model: dict[str, Any]

    @property
    def uid(self) -> str:
        return str(self.model["uid"])

    @property
    def title(self) -> str:
        return str(self.model.get("title", ""))

    def json_text(self) -> str:
        """The model as stable JSON: sorted keys, so a rebuild changes no byte."""
        return json.dumps(self.model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def default_src() -> Path:
    """The shipped ``dashboards/`` folder (a checkout's, or an installed wheel's); the
    checkout's path when there is none, so the error names it."""
    try:
        return asset_dir("dashboards")
    except AssetNotFound:
        return Path(__file__).resolve().parents[1] / "dashboards"


def find_sources(src: Path) -> list[Path]:
    """The ``*.dashboard.py`` files in ``src``, sorted by name."""
    if not src.is_dir():
        raise DashboardError(
            f"no dashboards folder at {src}: pass --src with the folder holding the *{SUFFIX} files"
        )
    sources = sorted(src.glob(f"*{SUFFIX}"))
    if not sources:
        raise DashboardError(f"{src} holds no *{SUFFIX} files: is --src the right folder?")
    return sources


def build_all(src: Path) -> list[BuiltDashboard]:
    """Every dashboard in ``src`` rendered, checked for a usable uid unique among them."""
    built = [build(path) for path in find_sources(src)]
    seen: dict[str, Path] = {}
    for item in built:
        if item.uid in seen:
            raise DashboardError(
                f"{item.source} and {seen[item.uid]} both have the uid {item.uid!r}: "
                "give each dashboard its own name"
            )
        seen[item.uid] = item.source
    return built


def build(path: Path) -> BuiltDashboard:
    """One dashboard file run and rendered with grafanalib's encoder."""
    return BuiltDashboard(path, render(load(path), path))


def load(path: Path) -> Any:
    """Run the file and return its ``dashboard``."""
    module_name = "_bfm_dashboard_" + re.sub(r"\W", "_", path.name[: -len(SUFFIX)])
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise DashboardError(f"{path} cannot be loaded as Python: is it a *{SUFFIX} file?")
    module = importlib.util.module_from_spec(spec)
    with _siblings_importable(path.parent):
        # In sys.modules while it runs: dataclasses and pickling look their module up.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            raise DashboardError(
                f"{_where(path, err)}: the dashboard failed to load: {type(err).__name__}: "
                f"{_one_line(str(err))}"
            ) from err
    if not hasattr(module, "dashboard"):
        raise DashboardError(
            f"{path} defines no `dashboard`: a *{SUFFIX} file must assign its grafanalib "
            "Dashboard to a module-level name `dashboard`"
        )
    return module.dashboard


def render(dashboard: Any, path: Path) -> dict[str, Any]:
    """The dashboard's JSON model; its uid must be set and fit Grafana's rules."""
    to_json_data = getattr(dashboard, "to_json_data", None)
    if not callable(to_json_data):
        raise DashboardError(
            f"{path}: `dashboard` is a {type(dashboard).__name__}, not a grafanalib "
            "Dashboard (build it with panels.bfm_dashboard)"
        )
    try:
        model = json.loads(json.dumps(to_json_data(), cls=DashboardEncoder))
    except Exception as err:
        raise DashboardError(
            f"{path}: the dashboard does not render to JSON: {type(err).__name__}: "
            f"{_one_line(str(err))}"
        ) from err
    uid = model.get("uid") if isinstance(model, dict) else None
    if not isinstance(uid, str) or not _UID.fullmatch(uid) or len(uid) > _UID_MAX_CHARS:
        raise DashboardError(
            f"{path}: the dashboard's uid is {uid!r}; it needs a stable one of lowercase "
            f"letters, digits and dashes, at most {_UID_MAX_CHARS} characters "
            "(panels.dashboard_uid)"
        )
    return dict(model)


def write_all(
    built: list[BuiltDashboard], out: Path, *, configmaps: bool = False
) -> list[tuple[BuiltDashboard, Path]]:
    """Write ``<out>/<uid>.json`` for each dashboard and, with ``configmaps``,
    ``<out>/configmaps/<uid>.yaml``; returns each file written with its dashboard."""
    written: list[tuple[BuiltDashboard, Path]] = []
    for item in built:
        written.append((item, _write(out / f"{item.uid}.json", item.json_text())))
        if configmaps:
            path = out / CONFIGMAP_DIR / f"{item.uid}.yaml"
            written.append((item, _write(path, configmap_yaml(item))))
    return written


def configmap_yaml(item: BuiltDashboard) -> str:
    """A ConfigMap holding the dashboard's JSON, labelled for Grafana's dashboard sidecar."""
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"grafana-dashboard-{item.uid}",
            "labels": {CONFIGMAP_LABEL: "1", "app.kubernetes.io/part-of": "bfm"},
        },
        "data": {f"{item.uid}.json": item.json_text()},
    }
    text = yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True)
    if len(text.encode()) > CONFIGMAP_MAX_BYTES:
        raise DashboardError(
            f"{item.source}: the ConfigMap would be {len(text.encode())} bytes, over the "
            f"API server's {CONFIGMAP_MAX_BYTES}: split the dashboard"
        )
    return text


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks, so the JSON inside stays readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _write(path: Path, text: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise DashboardError(
            f"cannot write {path}: {err.strerror or err}; is --out a writable folder?"
        ) from None
    return path


@contextlib.contextmanager
def _siblings_importable(folder: Path) -> Iterator[None]:
    entry = str(folder)
    before = set(sys.modules)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)
        root = folder.resolve()
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None)
            if name.startswith("_bfm_dashboard_") or (
                file and Path(file).resolve().is_relative_to(root)
            ):
                del sys.modules[name]


def _where(path: Path, err: Exception) -> str:
    """``file:line`` of the dashboard's own line that raised (or called the helper that
    did), else the file itself."""
    if isinstance(err, SyntaxError) and err.filename and err.lineno:
        return f"{err.filename}:{err.lineno}"
    own = path.resolve()
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(err.__traceback__)
        if Path(frame.filename).resolve() == own
    ]
    return f"{path}:{lines[-1]}" if lines else str(path)


def _one_line(text: str) -> str:
    return " ".join(text.split())
