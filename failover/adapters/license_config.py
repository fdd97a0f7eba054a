"""Where a site finds its license: ``<dir>/license.json`` and the files beside it.

``license.json`` (schema ``bfm.license-config/1``)::

    {"schema": "bfm.license-config/1", "system_id": "hemisphere-0001",
     "grace_s": 259200, "public_key": "public.key"}

``public_key`` is a path relative to the directory (or absolute); each site's dongle is
``<dir>/<site>.license``. In Kubernetes the same directory is a mounted ConfigMap (the
configuration and the public key) and a Secret per site (its license file).

``dev_setup`` makes such a directory with a throwaway key pair for the demo and tests:
the signing key it writes is a dev key, never a production one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from failover.adapters.files import write_text_atomically
from failover.adapters.license_files import (
    LicenseKeyError,
    LicensePayload,
    generate_keypair,
    issue,
    load_public_key,
    save_private_key,
    save_public_key,
)
from failover.core.licensing import DEFAULT_GRACE_S

CONFIG_FILE = "license.json"
CONFIG_SCHEMA = "bfm.license-config/1"
DEV_PRIVATE_KEY = "dev-signing.key"
PUBLIC_KEY = "public.key"


class LicenseConfigError(ValueError):
    """The license configuration cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class LicenseConfig:
    system_id: str
    grace_s: float
    public_key_path: Path
    directory: Path

    def license_file(self, site: str) -> Path:
        return self.directory / f"{site}.license"

    def public_key(self) -> Ed25519PublicKey:
        try:
            return load_public_key(self.public_key_path)
        except LicenseKeyError as err:
            raise LicenseConfigError(
                f"{err}; fix 'public_key' in {self.directory / CONFIG_FILE}"
            ) from None

    def save(self) -> None:
        doc = {
            "schema": CONFIG_SCHEMA,
            "system_id": self.system_id,
            "grace_s": self.grace_s,
            "public_key": str(self.public_key_path.relative_to(self.directory))
            if self.public_key_path.is_relative_to(self.directory)
            else str(self.public_key_path),
        }
        write_text_atomically(self.directory / CONFIG_FILE, json.dumps(doc, indent=2) + "\n")

    @staticmethod
    def load(directory: Path) -> LicenseConfig:
        path = directory / CONFIG_FILE
        try:
            doc: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LicenseConfigError(
                f"no {CONFIG_FILE} in {directory}; create it (see docs/licensing.md) or run "
                "without licensing"
            ) from None
        except (OSError, ValueError) as err:
            raise LicenseConfigError(f"{path} is not readable JSON ({err})") from None
        if not isinstance(doc, dict) or doc.get("schema") != CONFIG_SCHEMA:
            raise LicenseConfigError(f"{path}: 'schema' must be {CONFIG_SCHEMA!r}")
        system_id, key, grace_s = doc.get("system_id"), doc.get("public_key"), doc.get("grace_s")
        if not isinstance(system_id, str) or not system_id:
            raise LicenseConfigError(f"{path}: 'system_id' must be a non-empty string")
        if not isinstance(key, str) or not key:
            raise LicenseConfigError(f"{path}: 'public_key' must be a file path")
        if grace_s is None:
            grace_s = DEFAULT_GRACE_S
        if not isinstance(grace_s, int | float) or isinstance(grace_s, bool) or grace_s < 0:
            raise LicenseConfigError(f"{path}: 'grace_s' must be seconds >= 0, got {grace_s!r}")
        return LicenseConfig(system_id, float(grace_s), directory / key, directory)


def dev_setup(
    directory: Path,
    *,
    system_id: str,
    sites: tuple[str, ...],
    now_wall_s: float,
    valid_for_s: float = 365 * 86400.0,
    grace_s: float = DEFAULT_GRACE_S,
    serial: str = "HSD-DEV-0001",
) -> LicenseConfig:
    """A license directory with a fresh dev key pair and one cloned dongle per site."""
    directory.mkdir(parents=True, exist_ok=True)
    private, public = generate_keypair()
    save_private_key(directory / DEV_PRIVATE_KEY, private, overwrite=True)
    save_public_key(directory / PUBLIC_KEY, public)
    config = LicenseConfig(system_id, grace_s, directory / PUBLIC_KEY, directory)
    config.save()
    payload = LicensePayload(
        system_id=system_id,
        dongle_serial=serial,
        issued_at_wall_s=now_wall_s,
        expires_at_wall_s=now_wall_s + valid_for_s,
    )
    text = issue(payload, private)
    for site in sites:
        write_text_atomically(config.license_file(site), text)
    return config
