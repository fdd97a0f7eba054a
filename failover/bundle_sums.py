"""SHA256SUMS for an offline bundle: write one in ``sha256sum`` format, and verify it.

The file lists every file of the bundle but itself, by its path relative to the bundle
root with forward slashes, sorted, one ``<64 hex>  <path>`` line each, so that
``sha256sum -c SHA256SUMS`` run in the bundle checks it on any Linux box.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

SUMS_NAME = "SHA256SUMS"
_CHUNK_BYTES = 1024 * 1024
# sha256sum writes "<hex>  <path>" (text mode) or "<hex> *<path>" (binary mode).
_LINE = re.compile(r"(?P<digest>[0-9a-f]{64}) [ *](?P<path>.+)")


class SumsError(Exception):
    """A SHA256SUMS file that is missing or cannot be read; the message names it."""


@dataclass(frozen=True)
class SumsReport:
    """What a check of SHA256SUMS found: listed files missing, changed, and files not listed."""

    checked: int
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.unlisted)


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_files(root: Path) -> list[str]:
    """Every regular file under ``root`` but SHA256SUMS, relative and sorted."""
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and path.relative_to(root).as_posix() != SUMS_NAME
    )


def sums_text(root: Path) -> str:
    """The SHA256SUMS content for the files under ``root``."""
    return "".join(f"{file_sha256(root / name)}  {name}\n" for name in bundle_files(root))


def write_sums(root: Path) -> Path:
    """Write ``root/SHA256SUMS`` and return its path."""
    path = root / SUMS_NAME
    path.write_text(sums_text(root), encoding="utf-8")
    return path


def parse_sums(text: str, source: Path) -> dict[str, str]:
    """Path -> hex digest from SHA256SUMS text; SumsError names a malformed line."""
    listed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise SumsError(
                f"{source}:{number} is not a sha256sum line ('<64 hex digits>  <path>'): {line!r}"
            )
        listed[match["path"]] = match["digest"]
    return listed


def verify_sums(root: Path) -> SumsReport:
    """Check every file listed in ``root/SHA256SUMS`` and look for files it does not list."""
    path = root / SUMS_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SumsError(
            f"{path} does not exist: is {root} a bundle made by 'bfm bundle'?"
        ) from None
    except OSError as err:
        raise SumsError(f"cannot read {path}: {err.strerror or err}") from None
    listed = parse_sums(text, path)
    missing: list[str] = []
    changed: list[str] = []
    for name, digest in sorted(listed.items()):
        file = root / name
        if not file.is_file():
            missing.append(name)
        elif file_sha256(file) != digest:
            changed.append(name)
    unlisted = [name for name in bundle_files(root) if name not in listed]
    return SumsReport(checked=len(listed), missing=missing, changed=changed, unlisted=unlisted)
