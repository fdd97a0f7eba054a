"""INSTALL.md of an offline bundle: the steps a site without internet follows, in order."""

from __future__ import annotations

from typing import Any

_MIRROR_EXAMPLE_REGISTRY = "registry.site.local"


def install_guide(
    *, version: str, python_version: str, platforms: tuple[str, ...], images: dict[str, Any]
) -> str:
    """The guide for a bundle of BFM ``version`` whose wheels target ``python_version``."""
    target = f"Python {python_version}" + (f" on {', '.join(platforms)}" if platforms else "")
    return "\n".join(
        [
            f"# Installing BFM {version} offline",
            "",
            "This folder carries everything a site without internet needs: the wheels of BFM",
            f"and every dependency ({target}), the Helm chart, the dashboards, the alert rules,",
            "the collector configurations and the container images to mirror, by digest.",
            "",
            "## 1. Check the bundle arrived whole",
            "",
            "```sh",
            "cd <this folder>",
            "sha256sum -c SHA256SUMS        # every line must say OK",
            "bfm bundle verify .            # the same, once BFM is installed",
            "```",
            "",
            "## 2. Install BFM from the wheelhouse (no index, no network)",
            "",
            "```sh",
            f"python{python_version} -m venv /opt/bfm",
            "/opt/bfm/bin/pip install --no-index --find-links wheelhouse 'bfm[k8s]'",
            "/opt/bfm/bin/bfm version       # prints " + version,
            "```",
            "",
            "The wheel also installs the chart, collectors, alerts and dashboards under",
            "`/opt/bfm/share/bfm/`, where `bfm k8s render` finds them.",
            "",
            "## 3. Mirror the container images into the site registry",
            "",
            "On a machine that reaches both the internet and the site registry (or with",
            "`skopeo copy ... oci-archive:` to carry them on a disk), copy each image by its",
            f"digest; `{_MIRROR_EXAMPLE_REGISTRY}` stands for your registry:",
            "",
            *_image_lines(images),
            "",
            "An image whose digest is `null` in `images.json` has no digest on record yet: its",
            "note says why and how to find it. Pull by digest, never by tag alone.",
            "",
            "## 4. Render and install on Kubernetes",
            "",
            "```sh",
            "bfm k8s render --values my-values.yaml > bfm.yaml     # review the manifests",
            "helm install bfm helm/bfm -f my-values.yaml",
            "```",
            "",
            "Point every image of `my-values.yaml` at the site registry (the chart's",
            "`values.yaml` lists them).",
            "",
            "## 5. Observability files",
            "",
            "- `dashboards/*.json`: Grafana dashboards; put them in a folder Grafana's file",
            "  provisioning reads (or `bfm dashboards build --configmaps` for the sidecar).",
            "- `alerts/rules/*.yaml`: Prometheus rule files (`rule_files:`);",
            "  `alerts/alertmanager.yml`: Alertmanager's routing; `alerts/runbooks/`: the",
            "  runbooks the alerts link to.",
            "- `collectors/`: the OpenTelemetry collector and Prometheus scrape",
            "  configurations; the chart mounts the collector's.",
            "",
        ]
    )


def _image_lines(images: dict[str, Any]) -> list[str]:
    lines = ["```sh"]
    for image in images.get("images", []):
        reference = image["reference"]
        digest = image.get("digest")
        mirror = f"{_MIRROR_EXAMPLE_REGISTRY}/{reference.rsplit('/', 1)[-1]}"
        if digest:
            lines.append(
                f"skopeo copy --all --preserve-digests docker://{reference}@{digest} "
                f"docker://{mirror}"
            )
            lines.append(f"# or: crane copy {reference}@{digest} {mirror}")
        else:
            lines.append(f"# {reference}: digest unknown ({image.get('note', 'see images.json')})")
    lines.append("```")
    return lines
