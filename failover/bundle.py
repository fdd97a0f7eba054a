"""`bfm bundle`: gather everything an offline site needs to install and run BFM into one folder.

The bundle holds ``wheelhouse/`` (BFM's wheel and every runtime dependency's),
``helm/bfm/``, ``dashboards/*.json``, ``alerts/``, ``collectors/``, ``images.json`` (the
images to mirror, by digest), ``INSTALL.md`` and ``SHA256SUMS``. It is built from a
checkout, into a folder that must be new or empty; when a step fails, what was written
is removed again, so a half bundle is never mistaken for a whole one.
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import failover
from failover import bundle_images as images
from failover import bundle_sums as sums
from failover import bundle_wheels as wheels
from failover import dashboards_build as builder
from failover.assets import AssetNotFound, asset_dir
from failover.bundle_guide import install_guide

Progress = Callable[[str], None]
CHART_NAME = "bfm"
COPIED_ASSETS = ("alerts", "collectors")


class BundleInputError(Exception):
    """The out folder, the checkout or its shipped files cannot make a bundle (exit 2)."""


class BundleFailed(Exception):
    """A step of making the bundle failed (exit 1); the message names the step."""


@dataclass(frozen=True)
class BundleRequest:
    """What to bundle for: the out folder, the target Python, BFM's image digest if known."""

    out: Path
    target: wheels.Target
    image_digest: str | None = None


@dataclass
class BundleSummary:
    """What a bundle holds and how long each step took."""

    out: Path
    version: str = ""
    wheels: int = 0
    wheelhouse_bytes: int = 0
    built_from_sdist: list[str] = field(default_factory=list)
    files: int = 0
    total_bytes: int = 0
    step_durations_s: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "version": self.version,
            "wheels": self.wheels,
            "wheelhouse_bytes": self.wheelhouse_bytes,
            "built_from_sdist": self.built_from_sdist,
            "files": self.files,
            "total_bytes": self.total_bytes,
            "step_durations_s": {k: round(v, 2) for k, v in self.step_durations_s.items()},
        }


def check_out_dir(out: Path) -> None:
    """``out`` must not exist yet, or be an empty folder."""
    if out.exists() and not out.is_dir():
        raise BundleInputError(f"--out {out} is a file; give a new or empty folder.")
    if out.is_dir() and any(out.iterdir()):
        raise BundleInputError(
            f"--out {out} is not empty; give a new or empty folder (a bundle is never "
            "written over other files)."
        )


def find_checkout() -> Path:
    """The BFM checkout this runs from; BundleInputError when it runs from a wheel."""
    root = wheels.repo_root(failover.__file__)
    if root is None:
        raise BundleInputError(
            "'bfm bundle' must run from a BFM checkout (it builds BFM's wheel from the source "
            f"tree), but BFM runs from an installed package at {Path(failover.__file__).parent}; "
            "run it as 'python -m failover bundle' in a checkout with 'pip install -e .'."
        )
    return root


def find_chart() -> Path:
    """The chart folder ``helm/bfm``; BundleInputError when it is missing."""
    try:
        chart = asset_dir("helm") / CHART_NAME
    except AssetNotFound as err:
        raise BundleInputError(str(err)) from None
    if not (chart / "Chart.yaml").is_file():
        raise BundleInputError(
            f"the Helm chart is missing: {chart}/Chart.yaml does not exist; a bundle without "
            "the chart cannot install BFM on Kubernetes."
        )
    return chart


def wheel_metadata(wheel: Path) -> tuple[str, list[str]]:
    """The version and the runtime requirements written in a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(archive.read(name).decode("utf-8"))
    return str(headers["Version"]), wheels.runtime_requirements(headers.get_all("Requires-Dist"))


def make_bundle(
    request: BundleRequest,
    *,
    progress: Progress,
    clock: Callable[[], float] = time.monotonic,
) -> BundleSummary:
    """Write the bundle into ``request.out``; on failure remove what was written."""
    out = request.out
    check_out_dir(out)
    root = find_checkout()
    chart = find_chart()
    sources = {name: asset_dir(name) for name in (*COPIED_ASSETS, "dashboards")}
    facts = images.load_facts(root / images.FACTS_PATH)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _write(request, root, chart, sources, facts, progress=progress, clock=clock)
    except BaseException:
        _remove_contents(out, remove_folder=created)
        raise


def _write(
    request: BundleRequest,
    root: Path,
    chart: Path,
    sources: dict[str, Path],
    facts: dict[str, images.ImageFact],
    *,
    progress: Progress,
    clock: Callable[[], float],
) -> BundleSummary:
    out = request.out
    summary = BundleSummary(out=out)
    marks = [clock()]

    def step(name: str, message: str) -> None:
        marks.append(clock())
        summary.step_durations_s[name] = marks[-1] - marks[-2]
        progress(f"{message} [{marks[-1] - marks[-2]:.1f}s]")

    wheelhouse = out / "wheelhouse"
    wheelhouse.mkdir()
    progress(f"building BFM's wheel from {root}")
    try:
        bfm_wheel = wheels.build_bfm_wheel(root, wheelhouse)
        summary.version, requirements = wheel_metadata(bfm_wheel)
        step("bfm_wheel", f"built {bfm_wheel.name} ({_size(bfm_wheel.stat().st_size)})")
        target = request.target
        progress(
            f"downloading wheels for {len(requirements)} requirements and theirs "
            f"(Python {target.python_version}"
            + (f", {', '.join(target.platforms)})" if target.platforms else ", this platform)")
        )
        summary.built_from_sdist = wheels.add_dependencies(requirements, wheelhouse, target)
        summary.wheels = len(list(wheelhouse.glob("*.whl")))
        summary.wheelhouse_bytes = _tree_bytes(wheelhouse)
        built = summary.built_from_sdist
        step(
            "dependencies",
            f"wheelhouse: {summary.wheels} wheels, {_size(summary.wheelhouse_bytes)}"
            + (f"; built from sdists: {', '.join(built)}" if built else "; all binary wheels"),
        )
        wheels.check_complete(wheelhouse, summary.version, target)
    except wheels.WheelhouseError as err:
        raise BundleFailed(str(err)) from None
    step("check", "checked: the wheelhouse alone installs BFM (pip --no-index --dry-run)")

    shutil.copytree(chart, out / "helm" / CHART_NAME)
    for name in COPIED_ASSETS:
        shutil.copytree(sources[name], out / name, ignore=shutil.ignore_patterns("__pycache__"))
    alerts, collectors = _count_files(out / "alerts"), _count_files(out / "collectors")
    step("assets", f"copied the chart, {alerts} alert files and {collectors} collector files")
    dashboards = _render_dashboards(sources["dashboards"], out / "dashboards")
    step("dashboards", f"rendered {dashboards} dashboards to dashboards/")

    manifest = images.images_manifest(
        images.read_chart_images(chart), facts, bfm_digest=request.image_digest
    )
    (out / "images.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    unknown = [entry["reference"] for entry in manifest["images"] if not entry["digest"]]
    step(
        "images",
        f"images.json: {len(manifest['images'])} images"
        + (f", digest unknown for {', '.join(unknown)}" if unknown else ", all pinned"),
    )
    guide = install_guide(
        version=summary.version,
        python_version=request.target.python_version,
        platforms=request.target.platforms,
        images=manifest,
    )
    (out / "INSTALL.md").write_text(guide, encoding="utf-8")
    sums.write_sums(out)
    summary.files = len(sums.bundle_files(out)) + 1
    summary.total_bytes = _tree_bytes(out)
    step("sums", f"wrote INSTALL.md and SHA256SUMS ({summary.files} files)")
    return summary


def _render_dashboards(src: Path, dest: Path) -> int:
    try:
        built = builder.build_all(src)
        builder.write_all(built, dest)
    except builder.DashboardError as err:
        raise BundleFailed(f"rendering the dashboards failed: {err}") from None
    return len(built)


def _remove_contents(folder: Path, *, remove_folder: bool) -> None:
    if remove_folder:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _tree_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _count_files(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.is_file())


def _size(count: int) -> str:
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f} MB"
    return f"{count / 1024:.0f} KB"
