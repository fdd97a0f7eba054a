"""The ``Dongle`` port over a license file: locally ``<run dir>/license/<site>.license``,
in Kubernetes the file a mounted Secret puts in the pod (the same bytes, the same check).

The public key and the system id come from the site's configuration, never from the
file itself; each ``read`` reads the file again, so a replaced, removed or renewed file
counts from the next read on.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from failover.adapters.license_files import read_dongle
from failover.core.licensing import DongleEvidence


class LicenseFileDongle:
    """Site ``site``'s dongle: the license file at ``path``, checked with ``public_key``."""

    def __init__(
        self, path: Path, public_key: Ed25519PublicKey, *, site: str, system_id: str
    ) -> None:
        self.path = path
        self.public_key = public_key
        self.site = site
        self.system_id = system_id

    def read(self, now_wall_s: float) -> DongleEvidence:
        return read_dongle(
            self.path,
            self.public_key,
            site=self.site,
            system_id=self.system_id,
            now_wall_s=now_wall_s,
        )
