"""The shipped folders (chart, collectors, alerts, dashboards) are found, and the wheel
carries every file of them (``pyproject.toml``'s ``data-files``, ``failover/assets.py``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from failover import assets
from failover.assets import ASSETS, ASSETS_ENV, AssetNotFound, asset_dir, candidates

REPO = Path(__file__).resolve().parents[2]
NOT_SHIPPED = ("__pycache__",)


def _data_files() -> dict[str, list[str]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(config["tool"]["setuptools"]["data-files"])


def _shipped() -> list[Path]:
    files = []
    for name in ASSETS:
        folder = REPO / name
        if folder.is_dir():
            files += [
                p.relative_to(REPO)
                for p in folder.rglob("*")
                if p.is_file() and not any(part in NOT_SHIPPED for part in p.parts)
            ]
    return sorted(files)


def test_every_shipped_file_goes_into_the_wheel_beside_its_folder() -> None:
    data_files = _data_files()
    missing = []
    for path in _shipped():
        target = f"share/bfm/{path.parent.as_posix()}"
        patterns = data_files.get(target, [])
        # setuptools expands the patterns with glob, whose * skips dotfiles
        if not any(REPO / path in set(REPO.glob(pattern)) for pattern in patterns):
            missing.append(path.as_posix())
    assert missing == [], (
        f"shipped files the wheel would not carry: {missing}; add their folder to "
        "[tool.setuptools.data-files] in pyproject.toml"
    )


def test_data_files_name_only_shipped_folders() -> None:
    for target, patterns in _data_files().items():
        assert target.startswith("share/bfm/"), target
        folder = target.removeprefix("share/bfm/")
        assert folder.split("/")[0] in ASSETS, target
        for pattern in patterns:
            assert Path(pattern).parent.as_posix() == folder, (target, pattern)
            assert any(True for _ in REPO.glob(pattern)), f"{pattern} matches nothing"


def test_a_checkout_finds_its_folders() -> None:
    for name in ("alerts", "collectors", "dashboards"):
        assert asset_dir(name, environ={}) == REPO / name


def test_the_environment_names_another_folder_first(tmp_path: Path) -> None:
    (tmp_path / "alerts").mkdir()
    assert asset_dir("alerts", environ={ASSETS_ENV: str(tmp_path)}) == tmp_path / "alerts"
    assert candidates("alerts", {ASSETS_ENV: str(tmp_path)})[0] == tmp_path / "alerts"


def test_an_unknown_or_missing_folder_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="unknown asset 'charts'"):
        asset_dir("charts")
    monkeypatch.setattr(assets, "candidates", lambda name, environ=None: [tmp_path / name])
    with pytest.raises(AssetNotFound, match=rf"helm/ folder is not installed.*{ASSETS_ENV}"):
        asset_dir("helm")
