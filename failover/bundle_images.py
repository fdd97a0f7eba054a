"""The container images an offline site mirrors: found in the chart, pinned by digest.

The images are those the chart's ``values.yaml`` names (any mapping with ``repository``
and ``tag``). Each digest comes from ``bundle/images.json`` in the repository, a facts
file that records where every digest was read (``source``); an image with no digest on
record gets ``"digest": null`` and a note saying how to find it, never a guessed one.
BFM's own image is built from the ``Containerfile``, so its digest is known only once
pushed: ``bfm bundle --image-digest`` supplies it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FACTS_PATH = Path("bundle") / "images.json"
BFM_REPOSITORY_NAME = "bfm"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_DEFAULT_REGISTRY = "docker.io/"


class ImagesError(Exception):
    """A facts file or chart values that cannot be used; the message names the file."""


@dataclass(frozen=True)
class ImageFact:
    """A digest on record for one image reference, and where it was read."""

    reference: str
    digest: str | None
    source: str
    note: str = ""


@dataclass(frozen=True)
class ChartImage:
    """One image the chart's values name: where in values.yaml, and its ``repo:tag``."""

    values_path: str
    reference: str
    digest: str | None = None  # a digest written in values.yaml itself


def is_digest(text: object) -> bool:
    """True for ``sha256:`` followed by 64 lowercase hex digits."""
    return isinstance(text, str) and _DIGEST.fullmatch(text) is not None


def fact_problems(document: object) -> list[str]:
    """What is wrong with a facts document (empty when it is well formed)."""
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        return ['the document must be an object with an "images" list']
    problems = []
    for index, entry in enumerate(document["images"]):
        where = f"images[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            continue
        reference = entry.get("reference")
        if not isinstance(reference, str) or ":" not in reference.rsplit("/", 1)[-1]:
            problems.append(f"{where}.reference must be 'repository:tag', not {reference!r}")
        digest = entry.get("digest")
        if digest is not None and not is_digest(digest):
            problems.append(f"{where}.digest must be null or sha256:<64 hex>, not {digest!r}")
        if not isinstance(entry.get("source"), str) or not entry["source"].strip():
            problems.append(f"{where}.source must say where the digest was read")
        if digest is None and not str(entry.get("note", "")).strip():
            problems.append(f"{where} has no digest, so it needs a note saying why")
    return problems


def load_facts(path: Path) -> dict[str, ImageFact]:
    """The facts file as normalized reference -> ImageFact; ImagesError when malformed."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImagesError(f"{path} does not exist: is this a BFM checkout?") from None
    except (OSError, ValueError) as err:
        raise ImagesError(f"cannot read {path}: {err}") from None
    problems = fact_problems(document)
    if problems:
        raise ImagesError(f"{path} is malformed: {'; '.join(problems)}")
    facts = {}
    for entry in document["images"]:
        fact = ImageFact(
            reference=entry["reference"],
            digest=entry.get("digest"),
            source=entry["source"],
            note=entry.get("note", ""),
        )
        facts[normalize(fact.reference)] = fact
    return facts


def normalize(reference: str) -> str:
    """``docker.io/library/x:t`` and ``x:t`` compare equal; so do ``docker.io/o/x`` and ``o/x``."""
    name = reference.removeprefix(_DEFAULT_REGISTRY)
    return name.removeprefix("library/")


def chart_images(values: Mapping[str, Any], app_version: str) -> list[ChartImage]:
    """Every ``{repository, tag}`` mapping in the chart values; an empty tag means the
    chart's ``appVersion`` (the usual Helm convention)."""
    images = []
    for path, node in _mappings(values, ""):
        repository = node.get("repository")
        if not isinstance(repository, str) or not repository or "tag" not in node:
            continue
        tag = str(node.get("tag") or app_version)
        registry = node.get("registry")
        if isinstance(registry, str) and registry:
            repository = f"{registry.rstrip('/')}/{repository}"
        digest = node.get("digest")
        images.append(
            ChartImage(path or ".", f"{repository}:{tag}", digest if is_digest(digest) else None)
        )
    return images


def read_chart_images(chart: Path) -> list[ChartImage]:
    """The images of the chart folder ``chart`` (its values.yaml and Chart.yaml)."""
    try:
        values = yaml.safe_load((chart / "values.yaml").read_text(encoding="utf-8")) or {}
        meta = yaml.safe_load((chart / "Chart.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ImagesError(f"cannot read the chart's values in {chart}: {err}") from None
    if not isinstance(values, dict) or not isinstance(meta, dict):
        raise ImagesError(f"{chart}/values.yaml and Chart.yaml must each hold a mapping")
    return chart_images(values, str(meta.get("appVersion", "")))


def images_manifest(
    images: list[ChartImage],
    facts: Mapping[str, ImageFact],
    *,
    bfm_digest: str | None,
) -> dict[str, Any]:
    """The bundle's images.json: each image with its reference, digest and source."""
    entries = []
    for image in images:
        entries.append(_entry(image, facts.get(normalize(image.reference)), bfm_digest))
    return {
        "about": (
            "Container images to mirror into the site registry; pull each by its digest. "
            "A null digest is not known yet: see its note."
        ),
        "images": entries,
    }


def _entry(image: ChartImage, fact: ImageFact | None, bfm_digest: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"values": image.values_path, "reference": image.reference}
    if _is_bfm(image.reference):
        if bfm_digest is not None:
            entry.update(digest=bfm_digest, source="bfm bundle --image-digest")
        else:
            entry.update(
                digest=None,
                source="built from the Containerfile of this repository",
                note=(
                    "its digest is known only once the image is built and pushed; rerun "
                    "'bfm bundle --image-digest sha256:...' to record it"
                ),
            )
    elif image.digest is not None:
        entry.update(digest=image.digest, source="the chart's values.yaml")
    elif fact is not None and fact.digest is not None:
        entry.update(digest=fact.digest, source=fact.source)
    else:
        entry.update(
            digest=None,
            source=fact.source if fact is not None else "no record",
            note=(
                f"no digest on record in {FACTS_PATH} for {image.reference}; on a connected "
                f"machine run 'crane digest {image.reference}' and add it there"
            ),
        )
    entry["pinned"] = f"{image.reference}@{entry['digest']}" if entry["digest"] else None
    return entry


def _is_bfm(reference: str) -> bool:
    repository = reference.rsplit(":", 1)[0]
    return repository.rsplit("/", 1)[-1] == BFM_REPOSITORY_NAME


def _mappings(node: object, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if isinstance(node, Mapping):
        yield path, node
        for key, child in node.items():
            yield from _mappings(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _mappings(child, f"{path}[{index}]")
