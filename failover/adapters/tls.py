"""TLS for the backbone's TCP traffic, where certificates are given (SECURITY.md).

Three files, named by environment variables so that every process of a site (its
routers, modules, producers and the site agent's pings) reads the same:

- ``BFM_TLS_CERT``: this site's certificate (PEM), with the addresses its listeners are
  reached at as subject alternative names (IP or DNS);
- ``BFM_TLS_KEY``: its private key (PEM; never logged);
- ``BFM_TLS_CA``: the CA certificate(s) that signed every site's certificate.

None set: plain TCP, as before (a trusted network or a tunnel between the sites). All
three set: mutual TLS 1.2 or newer on every backbone connection: a listener demands a
client certificate from the same CA, a client checks the listener's certificate and its
address. Some set: ``TlsConfigError`` naming what is missing and the fix; a process
never falls back to plain TCP by itself.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TLS_CERT_ENV = "BFM_TLS_CERT"
TLS_KEY_ENV = "BFM_TLS_KEY"
TLS_CA_ENV = "BFM_TLS_CA"
_NAMES = {"cert": TLS_CERT_ENV, "key": TLS_KEY_ENV, "ca": TLS_CA_ENV}


class TlsConfigError(ValueError):
    """The TLS settings are incomplete or their files unusable (the sentence says which)."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path

    def server_context(self) -> ssl.SSLContext:
        """For a listener: present our certificate, demand one from the same CA."""
        return self._context(ssl.Purpose.CLIENT_AUTH)

    def client_context(self) -> ssl.SSLContext:
        """For a client: check the listener's certificate and address, present ours."""
        return self._context(ssl.Purpose.SERVER_AUTH)

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(purpose, cafile=str(self.ca))
        except (OSError, ssl.SSLError) as err:
            raise TlsConfigError(f"{TLS_CA_ENV}={self.ca}: not usable ({err})") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED  # mutual: both ends are BFM processes
        try:
            context.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as err:
            raise TlsConfigError(
                f"cannot use the certificate {self.cert} with the key {self.key} ({err}); "
                f"check {TLS_CERT_ENV} and {TLS_KEY_ENV}"
            ) from None
        return context


def tls_from_env(environ: Mapping[str, str]) -> TlsFiles | None:
    """The TLS files the environment names; None when it names none."""
    given = {field: environ.get(name, "").strip() for field, name in _NAMES.items()}
    if not any(given.values()):
        return None
    missing = [_NAMES[field] for field, value in given.items() if not value]
    if missing:
        raise TlsConfigError(
            f"TLS needs {', '.join(_NAMES.values())} together; {', '.join(missing)} "
            "not set: set all three (or none, for plain TCP)"
        )
    paths = {field: Path(value) for field, value in given.items()}
    for field, path in paths.items():
        if not path.is_file():
            raise TlsConfigError(f"{_NAMES[field]}={path}: no such file")
    files = TlsFiles(paths["cert"], paths["key"], paths["ca"])
    files.server_context()  # unusable files fail here, at start-up, not on a connection
    return files


def wrap_client(conn: socket.socket, context: ssl.SSLContext | None, host: str) -> socket.socket:
    """``conn`` as the client of a TLS session with ``host`` (unchanged without TLS)."""
    return conn if context is None else context.wrap_socket(conn, server_hostname=host)


ETCD_CA_ENV = "BFM_ETCD_CA"
ETCD_CERT_ENV = "BFM_ETCD_CERT"
ETCD_KEY_ENV = "BFM_ETCD_KEY"


def etcd_tls_from_env(environ: Mapping[str, str]) -> ssl.SSLContext | None:
    """HTTPS to etcd (as etcdctl's ``--cacert``/``--cert``/``--key``): ``BFM_ETCD_CA``
    checks the members' certificates; ``BFM_ETCD_CERT`` with ``BFM_ETCD_KEY`` is the
    client certificate a member with ``--client-cert-auth`` demands. None when none is
    set; TlsConfigError naming what is wrong and the fix otherwise."""
    ca, cert, key = (environ.get(n, "").strip() for n in (ETCD_CA_ENV, ETCD_CERT_ENV, ETCD_KEY_ENV))
    if not (ca or cert or key):
        return None
    if not ca:
        raise TlsConfigError(
            f"{ETCD_CERT_ENV}/{ETCD_KEY_ENV} need {ETCD_CA_ENV} too (the CA of the etcd members)"
        )
    if bool(cert) != bool(key):
        raise TlsConfigError(f"{ETCD_CERT_ENV} and {ETCD_KEY_ENV} go together: set both or none")
    for name, value in ((ETCD_CA_ENV, ca), (ETCD_CERT_ENV, cert), (ETCD_KEY_ENV, key)):
        if value and not Path(value).is_file():
            raise TlsConfigError(f"{name}={value}: no such file")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise TlsConfigError(f"the etcd TLS files are not usable ({err})") from None
    return context
