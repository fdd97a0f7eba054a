"""A development PKI for TLS on one machine: a CA and one certificate for the loopback
addresses, signed by it (``bfm demo --tls``; tests). Never for production: there, each
site's certificate comes from the operator's own CA, with the addresses its listeners
are reached at (``failover.adapters.tls``, SECURITY.md)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from failover.adapters.tls import TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV, TlsFiles

VALID_FOR = dt.timedelta(days=7)
KEY_MODE = 0o600
HEARTBEAT_KEY_FILE = "heartbeat.key"
HEARTBEAT_KEY_ENV = "BFM_HEARTBEAT_KEY_FILE"  # failover.runtime.heartbeats reads it


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _write_secret(pem, path)


def _write_secret(data: bytes, path: Path) -> Path:
    """``data`` in ``path``, readable by its owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, KEY_MODE)  # O_TRUNC keeps an existing file's mode
    return path


def write_dev_pki(
    folder: Path, *, name: str = "bfm dev", addresses: Sequence[str] = ("127.0.0.1", "::1")
) -> TlsFiles:
    """``folder``/ca.pem, site.pem and site.key (0600): a fresh CA (P-256) and one
    certificate for ``addresses`` that it signed, valid for a week; and heartbeat.key
    (0600), the sites' shared heartbeat secret."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{name} CA"))
        .issuer_name(_name(f"{name} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{name} site"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + VALID_FOR)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "site.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_secret(secrets.token_hex(32).encode(), folder / HEARTBEAT_KEY_FILE)
    return TlsFiles(folder / "site.pem", _write_key(key, folder / "site.key"), folder / "ca.pem")


def tls_env(files: TlsFiles) -> dict[str, str]:
    """The ``BFM_TLS_*`` variables naming ``files``, and ``BFM_HEARTBEAT_KEY_FILE`` naming
    the shared heartbeat secret ``write_dev_pki`` wrote beside them."""
    key = files.ca.parent / HEARTBEAT_KEY_FILE
    return {
        TLS_CERT_ENV: str(files.cert),
        TLS_KEY_ENV: str(files.key),
        TLS_CA_ENV: str(files.ca),
        HEARTBEAT_KEY_ENV: str(key),
    }
