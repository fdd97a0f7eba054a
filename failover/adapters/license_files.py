"""The local site dongle: a signed license file per site, and the Ed25519 keys behind it.

A license file is JSON (schema ``bfm.license/1``, docs/licensing.md)::

    {"payload": {"schema": "bfm.license/1", "system_id": ..., "dongle_serial": ...,
                 "site": "any" | "<site>", "features": [...],
                 "issued_at": "<RFC 3339>", "expires_at": "<RFC 3339>"},
     "signature": "<base64 of the Ed25519 signature over canonical_bytes(payload)>"}

``read_dongle`` turns whatever a site holds into ``DongleEvidence`` and never raises on
bad input: every problem becomes a status with a reason naming it and the fix. Only the
public key ships with a system; the signing key stays with whoever issues licenses
(tests and ``bfm license issue`` generate throwaway dev keys at run time).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from failover.core.licensing import DongleEvidence, DongleStatus, rfc3339

LICENSE_SCHEMA = "bfm.license/1"
ANY_SITE = "any"
MAX_LICENSE_BYTES = 64 * 1024  # a license is a few hundred bytes; refuse to read a huge file
SIGNATURE_BYTES = 64
RAW_KEY_BYTES = 32
PAYLOAD_FIELDS = frozenset(
    {"schema", "system_id", "dongle_serial", "site", "features", "issued_at", "expires_at"}
)
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SITE = re.compile(r"[a-z0-9]+")


class LicenseKeyError(ValueError):
    """A key file that cannot be read or written; the message names the file and the fix."""


class MalformedLicense(ValueError):
    """A license payload with a missing or wrong field (the message names the field)."""


@dataclass(frozen=True)
class LicensePayload:
    """What a license grants: the signed part of a license file.

    ``site`` is ``"any"`` for the cloned dongle every site holds, or one site's name to
    bind the file to that site. Times are wall seconds, written as RFC 3339 (UTC).
    """

    system_id: str
    dongle_serial: str
    issued_at_wall_s: float
    expires_at_wall_s: float
    features: tuple[str, ...] = ("bfm",)
    site: str = ANY_SITE

    def __post_init__(self) -> None:
        problems = _payload_problems(self)
        if problems:
            raise MalformedLicense("invalid license payload: " + "; ".join(problems))

    def to_doc(self) -> dict[str, Any]:
        return {
            "schema": LICENSE_SCHEMA,
            "system_id": self.system_id,
            "dongle_serial": self.dongle_serial,
            "site": self.site,
            "features": list(self.features),
            "issued_at": rfc3339(self.issued_at_wall_s),
            "expires_at": rfc3339(self.expires_at_wall_s),
        }

    @staticmethod
    def from_doc(doc: Any) -> LicensePayload:
        """Parse a payload object; a missing, unknown or wrong field raises MalformedLicense."""
        if not isinstance(doc, Mapping):
            raise MalformedLicense(f"the payload must be an object, got {_kind(doc)}")
        missing = sorted(PAYLOAD_FIELDS - doc.keys())
        if missing:
            raise MalformedLicense(f"the payload lacks field(s) {', '.join(missing)}")
        unknown = sorted(doc.keys() - PAYLOAD_FIELDS)
        if unknown:
            raise MalformedLicense(f"the payload has unknown field(s) {', '.join(unknown)}")
        if doc["schema"] != LICENSE_SCHEMA:
            raise MalformedLicense(
                f"field 'schema' is {doc['schema']!r}, expected {LICENSE_SCHEMA!r}"
            )
        for name in ("system_id", "dongle_serial", "site"):
            if not isinstance(doc[name], str):
                raise MalformedLicense(f"field {name!r} must be a string, got {doc[name]!r}")
        features = doc["features"]
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise MalformedLicense(f"field 'features' must be a list of strings, got {features!r}")
        return LicensePayload(
            system_id=doc["system_id"],
            dongle_serial=doc["dongle_serial"],
            site=doc["site"],
            features=tuple(features),
            issued_at_wall_s=_parse_time(doc["issued_at"], "issued_at"),
            expires_at_wall_s=_parse_time(doc["expires_at"], "expires_at"),
        )


def canonical_bytes(payload_doc: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the payload as JSON with sorted keys, no whitespace,
    ASCII only. Issuer and reader both derive them from the payload object, so layout and
    indentation of the file do not matter, and the meaning of the file is what is signed."""
    return json.dumps(
        payload_doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    """A fresh signing key and its public key (for tests and dev systems only)."""
    private_key = Ed25519PrivateKey.generate()
    return private_key, private_key.public_key()


def issue(payload: LicensePayload, private_key: Ed25519PrivateKey) -> str:
    """The text of a license file granting ``payload``, signed with ``private_key``."""
    doc = payload.to_doc()
    signature = private_key.sign(canonical_bytes(doc))
    text = json.dumps(
        {"payload": doc, "signature": base64.b64encode(signature).decode("ascii")}, indent=2
    )
    return text + "\n"


def read_dongle(
    path: Path,
    public_key: Ed25519PublicKey,
    *,
    site: str,
    system_id: str,
    now_wall_s: float,
) -> DongleEvidence:
    """The evidence site ``site`` presents with its license file at ``path``."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_LICENSE_BYTES + 1)
    except FileNotFoundError:
        return DongleEvidence(
            site, DongleStatus.MISSING, f"no license file at {path}; install the license file"
        )
    except OSError as err:
        return DongleEvidence(
            site,
            DongleStatus.MISSING,
            f"cannot read the license file {path} ({err.strerror or err}); check the path "
            "and its permissions",
        )
    evidence = evidence_from_bytes(
        data, public_key, site=site, system_id=system_id, now_wall_s=now_wall_s
    )
    if evidence.status is DongleStatus.VALID:
        return evidence
    return replace(evidence, reason=f"license file {path}: {evidence.reason}")


def evidence_from_bytes(
    data: bytes,
    public_key: Ed25519PublicKey,
    *,
    site: str,
    system_id: str,
    now_wall_s: float,
) -> DongleEvidence:
    """Judge a license file's content (a file, or a mounted Secret's value). Order: is it
    a signed license at all (malformed), does the signature verify (tampered), are the
    signed fields sound (malformed), is it ours (foreign), is it current (expired)."""
    try:
        payload_doc, signature = _envelope(data)
    except MalformedLicense as err:
        return DongleEvidence(site, DongleStatus.MALFORMED, f"{err}; reissue the license file")
    try:
        public_key.verify(signature, canonical_bytes(payload_doc))
    except InvalidSignature:
        return DongleEvidence(
            site,
            DongleStatus.TAMPERED,
            "the signature does not verify with this system's public key (the file was "
            "changed after signing, or signed by another key); reinstall the issued file",
        )
    try:
        payload = LicensePayload.from_doc(payload_doc)
    except MalformedLicense as err:
        return DongleEvidence(site, DongleStatus.MALFORMED, f"{err}; reissue the license file")
    found = DongleEvidence(
        site=site,
        status=DongleStatus.VALID,
        system_id=payload.system_id,
        serial=payload.dongle_serial,
        features=payload.features,
        expires_at_wall_s=payload.expires_at_wall_s,
    )
    if payload.system_id != system_id:
        return _judged(
            found,
            DongleStatus.FOREIGN,
            f"dongle {payload.dongle_serial} is for system {payload.system_id!r}, this "
            f"system is {system_id!r}; install this system's license file",
        )
    if payload.site not in (ANY_SITE, site):
        return _judged(
            found,
            DongleStatus.FOREIGN,
            f"dongle {payload.dongle_serial} is bound to site {payload.site!r}, not "
            f"{site!r}; install the file issued for this site or for any site",
        )
    if not (math.isfinite(now_wall_s) and now_wall_s < payload.expires_at_wall_s):
        return _judged(
            found,
            DongleStatus.EXPIRED,
            f"dongle {payload.dongle_serial} expired at "
            f"{rfc3339(payload.expires_at_wall_s)}; install a renewed license file",
        )
    return found


def save_private_key(
    path: Path, private_key: Ed25519PrivateKey, *, overwrite: bool = False
) -> None:
    """Write the signing key as unencrypted PKCS#8 PEM, readable by its owner only.
    An existing file is kept unless ``overwrite``: losing a signing key cannot be undone."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise LicenseKeyError(
            f"{path} already exists; choose another path or remove the old key first"
        ) from None
    except OSError as err:
        raise LicenseKeyError(f"cannot write the key file {path}: {err.strerror or err}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    os.chmod(path, 0o600)  # O_TRUNC keeps an existing file's mode


def save_public_key(path: Path, public_key: Ed25519PublicKey) -> None:
    """Write the public key as SubjectPublicKeyInfo PEM."""
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        path.write_bytes(pem)
    except OSError as err:
        raise LicenseKeyError(f"cannot write the key file {path}: {err.strerror or err}") from None


def public_key_base64(public_key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key in base64 (one line, for configuration values)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a signing key saved as PEM (PKCS#8) or as the raw 32 bytes in base64."""
    data = _read_key_file(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as err:
            raise LicenseKeyError(f"{path} is not a readable private key PEM ({err})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise LicenseKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw_key(data, path))


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a public key saved as PEM (SubjectPublicKeyInfo) or as raw 32 bytes in base64."""
    return public_key_from_text(_read_key_file(path), str(path))


def public_key_from_text(data: bytes | str, origin: str = "the public key") -> Ed25519PublicKey:
    """A public key from PEM or base64 text (a file's content, or a configuration value)."""
    raw_data = data.encode("utf-8") if isinstance(data, str) else data
    if raw_data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(raw_data)
        except (ValueError, TypeError) as err:
            raise LicenseKeyError(f"{origin} is not a readable public key PEM ({err})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise LicenseKeyError(f"{origin} holds a {type(key).__name__}, not an Ed25519 key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw_key(raw_data, origin))


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise LicenseKeyError(
            f"cannot read the key file {path} ({err.strerror or err}); check the path"
        ) from None


def _raw_key(data: bytes, origin: object) -> bytes:
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != RAW_KEY_BYTES:
        raise LicenseKeyError(
            f"{origin} is neither PEM nor a base64 Ed25519 key of {RAW_KEY_BYTES} bytes"
        )
    return raw


def _envelope(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The payload object and the signature bytes, or MalformedLicense saying what is wrong."""
    if len(data) > MAX_LICENSE_BYTES:
        raise MalformedLicense(f"the file is larger than {MAX_LICENSE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedLicense(f"the file is not UTF-8 text (byte {err.start})") from None
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except MalformedLicense:
        raise
    except json.JSONDecodeError as err:
        raise MalformedLicense(
            f"the file is not JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        ) from None
    except (ValueError, RecursionError) as err:  # an int too long to convert, deep nesting
        raise MalformedLicense(f"the file is not a license ({err})") from None
    if not isinstance(doc, dict):
        raise MalformedLicense(f"the file must hold a JSON object, got {_kind(doc)}")
    if set(doc) != {"payload", "signature"}:
        raise MalformedLicense(
            f"the file must have exactly the fields payload and signature, got "
            f"{', '.join(sorted(doc)) or 'none'}"
        )
    payload_doc, signature_text = doc["payload"], doc["signature"]
    if not isinstance(payload_doc, dict):
        raise MalformedLicense(f"field 'payload' must be an object, got {_kind(payload_doc)}")
    if not isinstance(signature_text, str):
        raise MalformedLicense(f"field 'signature' must be a string, got {_kind(signature_text)}")
    try:
        signature = base64.b64decode(signature_text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedLicense("field 'signature' is not base64") from None
    # Only the canonical spelling: two spellings of one signature would make two "valid"
    # files of which one has been edited.
    if len(signature) != SIGNATURE_BYTES or base64.b64encode(signature).decode() != signature_text:
        raise MalformedLicense(
            f"field 'signature' must be {SIGNATURE_BYTES} bytes in canonical base64"
        )
    return payload_doc, signature


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise MalformedLicense(f"field {key!r} appears twice")
        doc[key] = value
    return doc


def _no_constant(name: str) -> Any:
    raise MalformedLicense(f"the file holds {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedLicense(f"the file holds {text}, which is too large for a number")
    return value


def _parse_time(value: Any, name: str) -> float:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise MalformedLicense(
            f"field {name!r} must be an RFC 3339 time like 2030-01-31T00:00:00Z, got {value!r}"
        )
    try:
        return datetime.fromisoformat(value.upper()).timestamp()
    except (ValueError, OverflowError):
        raise MalformedLicense(f"field {name!r} is not a real time, got {value!r}") from None


def _payload_problems(payload: LicensePayload) -> list[str]:
    problems = []
    if not _NAME.fullmatch(payload.system_id):
        problems.append(
            f"system_id must be 1-128 letters, digits or ._:- , got {payload.system_id!r}"
        )
    if not _NAME.fullmatch(payload.dongle_serial):
        problems.append(
            f"dongle_serial must be 1-128 letters, digits or ._:- , got {payload.dongle_serial!r}"
        )
    if payload.site != ANY_SITE and not _SITE.fullmatch(payload.site):
        problems.append(f"site must be {ANY_SITE!r} or a lowercase site name, got {payload.site!r}")
    if not all(isinstance(f, str) and _NAME.fullmatch(f) for f in payload.features):
        problems.append(f"features must be names (letters, digits, ._:-), got {payload.features!r}")
    elif len(set(payload.features)) != len(payload.features):
        problems.append(f"features must not repeat, got {payload.features!r}")
    times = (payload.issued_at_wall_s, payload.expires_at_wall_s)
    if not all(_is_wall_s(t) for t in times):
        problems.append(f"issued_at and expires_at must be finite wall seconds, got {times!r}")
    elif payload.expires_at_wall_s <= payload.issued_at_wall_s:
        problems.append(
            f"expires_at ({rfc3339(payload.expires_at_wall_s)}) must be after issued_at "
            f"({rfc3339(payload.issued_at_wall_s)})"
        )
    return problems


def _is_wall_s(value: object) -> bool:
    # Years 1970..9999: what RFC 3339 can write and every platform can convert.
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 253402300800
    )


def _judged(found: DongleEvidence, status: DongleStatus, reason: str) -> DongleEvidence:
    return replace(found, status=status, reason=reason)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
