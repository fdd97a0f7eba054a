"""The wheelhouse of an offline bundle: BFM's wheel and a wheel for every runtime dependency.

BFM's wheel is built from the checkout (a clean copy of it, so the build leaves nothing in
the working tree). The dependencies are downloaded as binary wheels for the target
Python and platforms; when one exists only as an sdist and the target is the Python
running this, it is built into a wheel here, so the offline site needs no compiler. A
dry-run install from the wheelhouse alone, with no index, proves it complete.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DISTRIBUTION = "bfm"
PIP_TIMEOUT_S = 900.0
# What a wheel build reads from the checkout; tests, caches and build output stay behind.
_COPY_IGNORE = shutil.ignore_patterns(
    ".git", "__pycache__", "*.pyc", ".*_cache", ".hypothesis", ".benchmarks", "build",
    "dist", "*.egg-info", ".venv", "node_modules", "tests", "benchmarks",
)  # fmt: skip
_EXTRA_MARKER = re.compile(r"""\bextra\s*==""")
# The extras a site needs offline: ``k8s`` (``bfm k8s render``'s embedded Helm SDK).
BUNDLED_EXTRAS = ("k8s",)
_ONLY_EXTRA = re.compile(r"""^\s*extra\s*==\s*["']([A-Za-z0-9._-]+)["']\s*$""")
_BUILT = re.compile(r"Created wheel for ([A-Za-z0-9._-]+):")
_TAIL_LINES = 12


class WheelhouseError(Exception):
    """A wheelhouse that cannot be built; the message names the step and pip's words."""


@dataclass(frozen=True)
class Target:
    """The Python the offline site runs: ``platforms`` empty means "this machine's"."""

    python_version: str
    platforms: tuple[str, ...] = ()

    @property
    def is_here(self) -> bool:
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        return not self.platforms and self.python_version == here

    def pip_options(self) -> list[str]:
        if self.is_here:
            return []
        options = ["--python-version", self.python_version, "--implementation", "cp"]
        for platform in self.platforms:
            options += ["--platform", platform]
        return options


@dataclass
class Wheelhouse:
    """What went into the wheelhouse: BFM's wheel and the dependencies built from sdists."""

    bfm_wheel: Path
    built_from_sdist: list[str] = field(default_factory=list)


def runtime_requirements(requires: Sequence[str] | None) -> list[str]:
    """The requirements of ``importlib.metadata.requires`` that are not behind an extra,
    and those of the ``BUNDLED_EXTRAS`` (without their marker)."""
    kept = []
    for requirement in requires or ():
        name, _, marker = requirement.partition(";")
        only = _ONLY_EXTRA.match(marker)
        if only and only.group(1) in BUNDLED_EXTRAS:
            kept.append(name.strip())
        elif not _EXTRA_MARKER.search(marker):
            kept.append(requirement.strip())
    return kept


def repo_root(package_file: str) -> Path | None:
    """The checkout holding the ``failover`` package at ``package_file``, or None when it
    runs from an installed wheel (no pyproject.toml beside the package)."""
    root = Path(package_file).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def isolated_pip_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without pip's configuration, so only the wheelhouse is consulted."""
    env = {name: value for name, value in environ.items() if not name.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def build_bfm_wheel(root: Path, wheelhouse: Path) -> Path:
    """Build BFM's wheel from a clean copy of the checkout at ``root`` into ``wheelhouse``."""
    with tempfile.TemporaryDirectory(prefix="bfm-src-") as scratch:
        source = Path(scratch) / "src"
        shutil.copytree(root, source, ignore=_COPY_IGNORE, symlinks=True)
        before = set(wheelhouse.glob("*.whl"))
        _pip(
            ["wheel", "--no-deps", "--wheel-dir", str(wheelhouse), str(source)],
            step="building BFM's wheel",
        )
    made = [path for path in wheelhouse.glob("*.whl") if path not in before]
    if len(made) != 1:
        raise WheelhouseError(f"building BFM's wheel left {len(made)} wheels in {wheelhouse}")
    return made[0]


def add_dependencies(requirements: list[str], wheelhouse: Path, target: Target) -> list[str]:
    """Download a binary wheel for each requirement (and theirs); when some exist only as
    sdists and the target is this Python, build those into wheels. Returns the names
    built from sdists."""
    download = ["download", "--only-binary=:all:", "--dest", str(wheelhouse)]
    try:
        _pip([*download, *target.pip_options(), *requirements], step="downloading wheels")
        return []
    except WheelhouseError as err:
        if not target.is_here:
            raise WheelhouseError(
                f"{err}; a dependency may have no wheel for Python {target.python_version} "
                f"on {', '.join(target.platforms) or 'this platform'}: run 'bfm bundle' on a "
                "machine like the target without --platform, so it can build that wheel"
            ) from None
    output = _pip(
        ["wheel", "--prefer-binary", "--wheel-dir", str(wheelhouse), *requirements],
        step="building wheels for dependencies without one",
    )
    return sorted(set(_BUILT.findall(output)))


def check_complete(wheelhouse: Path, version: str, target: Target) -> None:
    """Resolve ``bfm[k8s]==version`` from the wheelhouse alone, as the offline site will."""
    with tempfile.TemporaryDirectory(prefix="bfm-dry-run-") as scratch:
        command = ["install", "--dry-run", "--ignore-installed", "--no-index"]
        command += ["--find-links", str(wheelhouse), "--only-binary=:all:"]
        if not target.is_here:
            command += ["--target", scratch, *target.pip_options()]
        _pip(
            [*command, f"{DISTRIBUTION}[{','.join(BUNDLED_EXTRAS)}]=={version}"],
            step="checking that the wheelhouse alone installs BFM",
            env=isolated_pip_env(os.environ),
        )


def _pip(args: list[str], *, step: str, env: Mapping[str, str] | None = None) -> str:
    command = [sys.executable, "-m", "pip", *args]
    try:
        done = subprocess.run(  # noqa: S603  (our own interpreter, arguments we built)
            command,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise WheelhouseError(f"{step}: pip did not finish within {PIP_TIMEOUT_S:.0f}s") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-_TAIL_LINES:])
        raise WheelhouseError(f"{step} failed (pip exit {done.returncode}): {tail}")
    return done.stdout
