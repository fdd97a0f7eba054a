"""Where BFM's shipped files are: the Helm chart, collector configs, alert rules, dashboards.

In a checkout they sit beside the ``failover`` package (``helm/``, ``collectors/``,
``alerts/``, ``dashboards/``). An installed wheel carries them as data files under
``<prefix>/share/bfm/`` (``pyproject.toml``'s ``data-files``), so ``bfm k8s render``,
``bfm dashboards build`` and ``bfm bundle`` work from a wheel too, offline included.
``BFM_ASSETS_DIR`` names another folder holding them (an unpacked bundle, for example).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

ASSETS = ("helm", "collectors", "alerts", "dashboards")
ASSETS_ENV = "BFM_ASSETS_DIR"


class AssetNotFound(FileNotFoundError):
    """A shipped folder is nowhere to be found; the message names where it was looked for."""


def candidates(name: str, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where ``name`` may be, in the order looked at."""
    env = os.environ if environ is None else environ
    places = []
    if env.get(ASSETS_ENV):
        places.append(Path(env[ASSETS_ENV]) / name)
    places.append(Path(__file__).resolve().parents[1] / name)  # a checkout
    for prefix in (sysconfig.get_path("data"), sys.prefix):
        places.append(Path(prefix) / "share" / "bfm" / name)  # an installed wheel
    unique: list[Path] = []
    for place in places:
        if place not in unique:
            unique.append(place)
    return unique


def asset_dir(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """The folder of shipped files ``name`` (one of ``ASSETS``); AssetNotFound if none."""
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}")
    looked = candidates(name, environ)
    for place in looked:
        if place.is_dir():
            return place
    raise AssetNotFound(
        f"BFM's {name}/ folder is not installed: looked in {', '.join(map(str, looked))}; "
        f"reinstall BFM from its wheel or bundle, or set {ASSETS_ENV} to a folder holding it"
    )
