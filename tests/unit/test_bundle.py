"""The pure parts of `bfm bundle`: requirements, SHA256SUMS, the out folder, image facts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from failover import bundle, bundle_images, bundle_sums, bundle_wheels
from failover.bundle_guide import install_guide
from failover.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from failover.cli.main import run

REPO = Path(__file__).resolve().parents[2]
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "0123456789abcdef" * 4


# -- requirements -------------------------------------------------------------------------


def test_runtime_requirements_drop_the_extras_and_keep_other_markers() -> None:
    requires = [
        "typer>=0.29",
        'tomli>=2; python_version < "3.11"',
        'pytest>=8.0; extra == "dev"',
        "mypy>=1.10 ; extra=='dev'",
        'redis>=5; sys_platform == "linux" and extra == "dev"',
        'helm-python-sdk>=0.2.2; extra == "k8s"',
    ]
    assert bundle_wheels.runtime_requirements(requires) == [
        "typer>=0.29",
        'tomli>=2; python_version < "3.11"',
        "helm-python-sdk>=0.2.2",  # the k8s extra travels with the bundle
    ]
    assert bundle_wheels.runtime_requirements(None) == []


def test_wheel_metadata_reads_the_version_and_runtime_requirements(tmp_path: Path) -> None:
    wheel = tmp_path / "bfm-9.8.7-py3-none-any.whl"
    metadata = (
        "Metadata-Version: 2.1\nName: bfm\nVersion: 9.8.7\n"
        "Requires-Dist: typer>=0.29\nRequires-Dist: pyyaml>=6.0\n"
        'Requires-Dist: pytest>=8.0; extra == "dev"\nProvides-Extra: dev\n\nreadme text\n'
    )
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("bfm-9.8.7.dist-info/METADATA", metadata)
    assert bundle.wheel_metadata(wheel) == ("9.8.7", ["typer>=0.29", "pyyaml>=6.0"])


def test_repo_root_is_the_folder_with_pyproject_or_none(tmp_path: Path) -> None:
    package = tmp_path / "failover" / "__init__.py"
    package.parent.mkdir()
    package.write_text("")
    assert bundle_wheels.repo_root(str(package)) is None
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'bfm'\n")
    assert bundle_wheels.repo_root(str(package)) == tmp_path.resolve()


def test_target_passes_platform_options_only_for_another_machine() -> None:
    here = bundle_wheels.Target(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert here.is_here
    assert here.pip_options() == []
    assert bundle_wheels.Target("3.11", ("manylinux2014_x86_64",)).pip_options() == [
        "--python-version", "3.11", "--implementation", "cp",
        "--platform", "manylinux2014_x86_64",
    ]  # fmt: skip
    assert bundle_wheels.Target("3.99").pip_options()[:2] == ["--python-version", "3.99"]
    assert not bundle_wheels.Target("3.99").is_here


def test_isolated_pip_env_drops_pip_settings() -> None:
    env = bundle_wheels.isolated_pip_env({"PIP_FIND_LINKS": "/opt/w", "PATH": "/bin"})
    assert "PIP_FIND_LINKS" not in env
    assert env["PATH"] == "/bin"
    assert env["PIP_CONFIG_FILE"]


# -- SHA256SUMS ---------------------------------------------------------------------------


def _tree(root: Path) -> Path:
    (root / "wheelhouse").mkdir(parents=True)
    (root / "wheelhouse" / "a-1.0-py3-none-any.whl").write_bytes(b"wheel bytes")
    (root / "INSTALL.md").write_text("# install\n")
    (root / "helm" / "bfm").mkdir(parents=True)
    (root / "helm" / "bfm" / "Chart.yaml").write_text("name: bfm\n")
    return root


def test_sums_list_every_file_sorted_and_verify(tmp_path: Path) -> None:
    root = _tree(tmp_path / "b")
    bundle_sums.write_sums(root)
    lines = (root / "SHA256SUMS").read_text().splitlines()
    names = [line.split("  ", 1)[1] for line in lines]
    assert names == ["INSTALL.md", "helm/bfm/Chart.yaml", "wheelhouse/a-1.0-py3-none-any.whl"]
    assert all(len(line.split("  ", 1)[0]) == 64 for line in lines)
    report = bundle_sums.verify_sums(root)
    assert report.ok
    assert report.checked == 3


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="sha256sum (coreutils) missing")
def test_sums_are_what_sha256sum_checks(tmp_path: Path) -> None:
    root = _tree(tmp_path / "b")
    bundle_sums.write_sums(root)
    done = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (root / "INSTALL.md").write_text("# tampered\n")
    done = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0


def test_verify_finds_a_changed_a_missing_and_an_unlisted_file(tmp_path: Path) -> None:
    root = _tree(tmp_path / "b")
    bundle_sums.write_sums(root)
    (root / "INSTALL.md").write_text("# changed\n")
    (root / "helm" / "bfm" / "Chart.yaml").unlink()
    (root / "extra.txt").write_text("slipped in\n")
    report = bundle_sums.verify_sums(root)
    assert not report.ok
    assert report.changed == ["INSTALL.md"]
    assert report.missing == ["helm/bfm/Chart.yaml"]
    assert report.unlisted == ["extra.txt"]


def test_verify_names_a_malformed_line_and_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(bundle_sums.SumsError, match=r"SHA256SUMS:1 is not a sha256sum line"):
        bundle_sums.verify_sums(tmp_path)
    with pytest.raises(bundle_sums.SumsError, match="does not exist"):
        bundle_sums.verify_sums(tmp_path / "nowhere")


def test_bfm_bundle_verify_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "b")
    bundle_sums.write_sums(root)
    assert run(["bundle", "verify", str(root)]) == EXIT_OK
    assert "all 3 files match" in capsys.readouterr().out
    (root / "INSTALL.md").write_text("# changed\n")
    assert run(["bundle", "verify", str(root)]) == EXIT_FAILED
    captured = capsys.readouterr()
    assert "changed: INSTALL.md" in captured.out
    assert "1 changed" in captured.err
    assert run(["bundle", "verify", str(tmp_path / "nothing")]) == EXIT_USAGE


# -- the out folder and the options ---------------------------------------------------------


def test_a_non_empty_out_folder_is_refused_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    assert run(["bundle", "--out", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--out {out} is not empty" in err
    assert (out / "keep.txt").read_text() == "mine\n"


def test_an_out_file_and_bad_options_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    assert run(["bundle", "--out", str(file)]) == EXIT_USAGE
    assert "is a file" in capsys.readouterr().err
    out = str(tmp_path / "new")
    assert run(["bundle", "--out", out, "--image-digest", "sha256:abc"]) == EXIT_USAGE
    assert "--image-digest" in capsys.readouterr().err
    assert run(["bundle", "--out", out, "--python-version", "eleven"]) == EXIT_USAGE
    assert "--python-version" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_check_out_dir_accepts_a_new_or_empty_folder(tmp_path: Path) -> None:
    bundle.check_out_dir(tmp_path / "new")
    bundle.check_out_dir(tmp_path)


def test_a_failed_step_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (REPO / "helm" / "bfm" / "Chart.yaml").is_file():
        pytest.fail("helm/bfm/Chart.yaml is missing: the bundle needs the chart")

    def fail(root: Path, wheelhouse: Path) -> Path:
        (wheelhouse / "half.whl").write_bytes(b"half")
        raise bundle_wheels.WheelhouseError("building BFM's wheel failed (pip exit 1): boom")

    monkeypatch.setattr(bundle_wheels, "build_bfm_wheel", fail)
    out = tmp_path / "b"
    assert run(["bundle", "--out", str(out)]) == EXIT_FAILED
    assert "boom; nothing was left in" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()
    assert run(["bundle", "--out", str(out)]) == EXIT_FAILED
    assert out.is_dir()
    assert not any(out.iterdir())


# -- images ---------------------------------------------------------------------------------


def test_the_repository_image_facts_are_well_formed() -> None:
    document = json.loads((REPO / bundle_images.FACTS_PATH).read_text())
    assert bundle_images.fact_problems(document) == []
    for entry in document["images"]:
        assert entry["digest"] is None or bundle_images.is_digest(entry["digest"])
        assert entry["source"].strip()
    assert bundle_images.load_facts(REPO / bundle_images.FACTS_PATH)


def test_fact_problems_name_each_bad_entry() -> None:
    document = {
        "images": [
            {"reference": "otel/x:1", "digest": "sha256:123", "source": "a page"},
            {"reference": "otel/x", "digest": DIGEST_A, "source": "a page"},
            {"reference": "otel/y:1", "digest": DIGEST_A, "source": " "},
            {"reference": "otel/z:1", "digest": None, "source": "searched"},
            {"reference": "otel/w:1", "digest": "SHA256:" + "A" * 64, "source": "a page"},
        ]
    }
    problems = bundle_images.fact_problems(document)
    assert any("images[0].digest" in problem for problem in problems)
    assert any("images[1].reference" in problem for problem in problems)
    assert any("images[2].source" in problem for problem in problems)
    assert any("images[3] has no digest" in problem for problem in problems)
    assert any("images[4].digest" in problem for problem in problems)
    assert bundle_images.fact_problems([]) != []


def test_chart_images_and_their_digests() -> None:
    values = {
        "image": {"repository": "ghcr.io/hemisphere/bfm", "tag": "", "digest": ""},
        "otel": {"image": {"repository": "docker.io/otel/collector", "tag": "0.1.0"}},
        "extra": [{"image": {"registry": "quay.io", "repository": "x/y", "tag": 2}}],
        "pinned": {"repository": "z", "tag": "1", "digest": DIGEST_B},
        "notanimage": {"repository": "no tag here"},
    }
    images = bundle_images.chart_images(values, app_version="0.1.0")
    assert [(i.values_path, i.reference) for i in images] == [
        ("image", "ghcr.io/hemisphere/bfm:0.1.0"),
        ("otel.image", "docker.io/otel/collector:0.1.0"),
        ("extra[0].image", "quay.io/x/y:2"),
        ("pinned", "z:1"),
    ]
    facts = {
        "otel/collector:0.1.0": bundle_images.ImageFact("otel/collector:0.1.0", DIGEST_A, "notes")
    }
    manifest = bundle_images.images_manifest(images, facts, bfm_digest=None)
    by_ref = {entry["reference"]: entry for entry in manifest["images"]}
    bfm_entry = by_ref["ghcr.io/hemisphere/bfm:0.1.0"]
    assert bfm_entry["digest"] is None
    assert "--image-digest" in bfm_entry["note"]
    otel = by_ref["docker.io/otel/collector:0.1.0"]
    assert (otel["digest"], otel["source"]) == (DIGEST_A, "notes")
    assert otel["pinned"] == f"docker.io/otel/collector:0.1.0@{DIGEST_A}"
    assert by_ref["quay.io/x/y:2"]["digest"] is None
    assert "crane digest quay.io/x/y:2" in by_ref["quay.io/x/y:2"]["note"]
    assert by_ref["z:1"]["digest"] == DIGEST_B
    pinned = bundle_images.images_manifest(images, facts, bfm_digest=DIGEST_B)
    assert pinned["images"][0]["digest"] == DIGEST_B


def test_every_image_of_the_chart_has_a_digest_or_a_reason() -> None:
    chart = REPO / "helm" / "bfm"
    if not (chart / "values.yaml").is_file():
        pytest.fail("helm/bfm/values.yaml is missing: the bundle needs the chart")
    facts = bundle_images.load_facts(REPO / bundle_images.FACTS_PATH)
    images = bundle_images.read_chart_images(chart)
    assert any("opentelemetry-collector" in image.reference for image in images)
    for entry in bundle_images.images_manifest(images, facts, bfm_digest=None)["images"]:
        assert bundle_images.is_digest(entry["digest"]) or entry["note"], entry


def test_install_guide_names_every_step() -> None:
    images = {
        "images": [
            {"reference": "otel/c:1", "digest": DIGEST_A},
            {"reference": "ghcr.io/h/bfm:0.1.0", "digest": None, "note": "not pushed yet"},
        ]
    }
    guide = install_guide(version="0.1.0", python_version="3.11", platforms=(), images=images)
    for words in (
        "sha256sum -c SHA256SUMS",
        "python3.11 -m venv",
        "pip install --no-index --find-links wheelhouse 'bfm[k8s]'",
        "bfm k8s render --values",
        "helm install bfm helm/bfm",
        f"docker://otel/c:1@{DIGEST_A}",
        "crane copy",
        "ghcr.io/h/bfm:0.1.0: digest unknown (not pushed yet)",
        "dashboards/*.json",
        "alerts/rules",
        "collectors/",
    ):
        assert words in guide, words
