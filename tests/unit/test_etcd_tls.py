"""The etcd store over TLS (``BFM_ETCD_CA``, ``BFM_ETCD_CERT``, ``BFM_ETCD_KEY``, as
etcdctl's ``--cacert/--cert/--key``) against a real etcd member that serves its clients
over TLS and demands a client certificate (``EtcdCluster(tls=...)``; certificates from
``failover.adapters.tls_dev``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.adapters.etcd_cluster import EtcdCluster, etcd_binary
from failover.adapters.store_url import StoreUrlError, open_store
from failover.adapters.tls import ETCD_CA_ENV, ETCD_CERT_ENV, ETCD_KEY_ENV, TlsFiles
from failover.adapters.tls_dev import write_dev_pki
from failover.ports import StoreUnavailable

TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EtcdCluster, TlsFiles]]:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian: apt-get install -y etcd-server)")
    folder = tmp_path_factory.mktemp("etcd-tls")
    files = write_dev_pki(folder / "pki")
    with EtcdCluster(folder / "etcd", size=1, tls=files) as cluster:
        yield cluster, files


def _env(monkeypatch: pytest.MonkeyPatch, files: TlsFiles, *, client: bool = True) -> None:
    monkeypatch.setenv(ETCD_CA_ENV, str(files.ca))
    if client:
        monkeypatch.setenv(ETCD_CERT_ENV, str(files.cert))
        monkeypatch.setenv(ETCD_KEY_ENV, str(files.key))


def test_the_store_works_over_tls_with_a_client_certificate(
    tls_etcd: tuple[EtcdCluster, TlsFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, files = tls_etcd
    _env(monkeypatch, files)
    store = open_store(cluster.url + "/tls-ok/", request_timeout_s=TIMEOUT_S)
    try:
        revision = store.create("k", {"v": 1})
        got = store.get("k")
        assert got is not None and got.value == {"v": 1} and got.revision == revision
    finally:
        store.close()


def test_plain_http_or_no_client_certificate_gets_no_store(
    tls_etcd: tuple[EtcdCluster, TlsFiles], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cluster, files = tls_etcd
    with pytest.raises(StoreUnavailable):  # plain HTTP to a TLS listener
        open_store(cluster.url, request_timeout_s=TIMEOUT_S)
    _env(monkeypatch, files, client=False)
    with pytest.raises(StoreUnavailable):  # TLS, but the member demands a client certificate
        open_store(cluster.url, request_timeout_s=TIMEOUT_S)
    stranger = write_dev_pki(tmp_path / "stranger", name="stranger")
    _env(monkeypatch, stranger)
    with pytest.raises(StoreUnavailable):  # the member's certificate is not from this CA
        open_store(cluster.url, request_timeout_s=TIMEOUT_S)


def test_incomplete_tls_settings_are_a_clear_url_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ETCD_CERT_ENV, "/x.pem")
    with pytest.raises(StoreUrlError, match=ETCD_CA_ENV):
        open_store("etcd://127.0.0.1:2379")
    monkeypatch.setenv(ETCD_CA_ENV, "/nonexistent/ca.pem")
    monkeypatch.delenv(ETCD_CERT_ENV)
    with pytest.raises(StoreUrlError, match="no such file"):
        open_store("etcd://127.0.0.1:2379")
