"""The offline install: `bfm bundle` once, then BFM installed from it and run with no network.

The bundle is built from this checkout (pip downloads from the index; its cache may
help). A fresh venv then installs BFM from ``wheelhouse/`` alone inside ``unshare -n``
(a network namespace with nothing but a down loopback), with pip's configuration
cleared so no other wheel folder or index can help, and runs ``bfm --help``,
``bfm version`` and ``bfm k8s render`` there, from a folder outside the checkout so
the chart must come from the installed wheel. Each step prints one JSON line with its
duration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from failover.bundle_wheels import isolated_pip_env

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BUNDLE_TIMEOUT_S = 600.0
INSTALL_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 60.0


def _unshare_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    try:
        done = subprocess.run(
            ["unshare", "-n", "true"],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"'unshare -n true' could not run: {err}"
    if done.returncode != 0:
        return f"'unshare -n true' is not permitted here: {done.stderr.strip()}"
    return None


@dataclass(frozen=True)
class Installed:
    """A bundle, and a venv that installed BFM from it with the network unshared."""

    bundle: Path
    venv: Path
    env: dict[str, str]
    workdir: Path


def _timed(
    step: str,
    command: list[str],
    *,
    timeout_s: float,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> str:
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, cwd=cwd, env=env, check=False
    )
    elapsed_s = time.monotonic() - started
    print(json.dumps({"step": step, "seconds": round(elapsed_s, 2), "exit": done.returncode}))
    assert done.returncode == 0, f"{step} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _offline(venv: Path, *args: str) -> list[str]:
    return ["unshare", "-n", "--", str(venv / "bin" / args[0]), *args[1:]]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    problem = _unshare_problem()
    if problem is not None:
        pytest.skip(f"the offline install needs a network namespace: {problem}")
    root = tmp_path_factory.mktemp("offline")
    bundle = root / "bundle"
    summary = _timed(
        "bfm bundle",
        [sys.executable, "-m", "failover", "bundle", "--out", str(bundle), "--json"],
        timeout_s=BUNDLE_TIMEOUT_S,
        cwd=REPO,
    )
    print(summary.strip().splitlines()[-1])
    venv = root / "venv"
    wheelhouse = bundle / "wheelhouse"
    env = isolated_pip_env(os.environ)
    env.pop("BFM_ASSETS_DIR", None)
    env.pop("VIRTUAL_ENV", None)
    workdir = root / "elsewhere"
    workdir.mkdir()
    _timed(
        "python -m venv",
        ["unshare", "-n", "--", sys.executable, "-m", "venv", str(venv)],
        timeout_s=INSTALL_TIMEOUT_S,
        env=env,
        cwd=workdir,
    )
    _timed(
        "pip install --no-index (network unshared)",
        _offline(venv, "pip", "install", "--no-index", "--find-links", str(wheelhouse), "bfm[k8s]"),
        timeout_s=INSTALL_TIMEOUT_S,
        env=env,
        cwd=workdir,
    )
    yield Installed(bundle, venv, env, workdir)


def test_the_bundle_holds_every_part(installed: Installed) -> None:
    bundle = installed.bundle
    for part in ("INSTALL.md", "SHA256SUMS", "images.json", "helm/bfm/Chart.yaml"):
        assert (bundle / part).is_file(), part
    assert list((bundle / "dashboards").glob("*.json"))
    assert list((bundle / "alerts" / "rules").glob("*.yaml"))
    assert (bundle / "alerts" / "alertmanager.yml").is_file()
    assert list((bundle / "collectors").iterdir())
    wheels = [path.name for path in (bundle / "wheelhouse").iterdir()]
    assert all(name.endswith(".whl") for name in wheels), wheels
    images = json.loads((bundle / "images.json").read_text())["images"]
    assert any("opentelemetry-collector" in image["reference"] for image in images)


def test_sha256sums_verifies(installed: Installed) -> None:
    check = ["sha256sum", "--quiet", "-c", "SHA256SUMS"]
    _timed("sha256sum -c", check, timeout_s=RUN_TIMEOUT_S, cwd=installed.bundle)
    out = _timed(
        "bfm bundle verify (network unshared)",
        _offline(installed.venv, "bfm", "bundle", "verify", str(installed.bundle)),
        timeout_s=RUN_TIMEOUT_S,
        env=installed.env,
        cwd=installed.workdir,
    )
    assert "match SHA256SUMS" in out


def test_bfm_help_runs_offline(installed: Installed) -> None:
    out = _timed(
        "bfm --help (network unshared)",
        _offline(installed.venv, "bfm", "--help"),
        timeout_s=RUN_TIMEOUT_S,
        env=installed.env,
        cwd=installed.workdir,
    )
    assert "bundle" in out


def test_the_installed_version_is_the_checkouts(installed: Installed) -> None:
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    out = _timed(
        "bfm version (network unshared)",
        _offline(installed.venv, "bfm", "version", "--json"),
        timeout_s=RUN_TIMEOUT_S,
        env=installed.env,
        cwd=installed.workdir,
    )
    assert json.loads(out)["version"] == expected


def test_bfm_k8s_render_runs_offline(installed: Installed) -> None:
    out = _timed(
        "bfm k8s render (network unshared)",
        _offline(installed.venv, "bfm", "k8s", "render"),
        timeout_s=RUN_TIMEOUT_S,
        env=installed.env,
        cwd=installed.workdir,
    )
    assert "kind:" in out
    assert "apiVersion:" in out
