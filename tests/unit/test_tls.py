"""TLS on the backbone where certificates are given (``failover.adapters.tls``): real TLS
sessions on 127.0.0.1 between a router's or producer's ``Link``, a component's
``LineServer`` and the site agent's ping, with certificates made for the test
(``failover.adapters.tls_dev``: a CA, a site certificate for 127.0.0.1, and a stranger's
CA)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from failover.adapters.tls import (
    TLS_CA_ENV,
    TLS_CERT_ENV,
    TLS_KEY_ENV,
    TlsConfigError,
    TlsFiles,
    tls_from_env,
)
from failover.adapters.tls_dev import tls_env, write_dev_pki
from failover.runtime.probes import OK, UNANSWERED, ping_answer
from failover.workload.line_server import LineServer
from failover.workload.linkpool import Link

TIMEOUT_S = 2.0


def make_pki(folder: Path, name: str = "bfm") -> TlsFiles:
    return write_dev_pki(folder, name=name)


def env_of(files: TlsFiles) -> dict[str, str]:
    return tls_env(files)


class Pong(LineServer):
    """A component's listener that answers every line with a pong."""

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await reader.readline():
            writer.write(b'{"pong": true}\n')
            await writer.drain()
        writer.close()


def test_no_settings_mean_plain_tcp_and_some_are_an_error(tmp_path: Path) -> None:
    assert tls_from_env({}) is None
    files = make_pki(tmp_path)
    with pytest.raises(TlsConfigError, match=f"{TLS_KEY_ENV}, {TLS_CA_ENV} not set"):
        tls_from_env({TLS_CERT_ENV: str(files.cert)})
    with pytest.raises(TlsConfigError, match="no such file"):
        tls_from_env({**env_of(files), TLS_CA_ENV: str(tmp_path / "missing.pem")})
    other = make_pki(tmp_path / "other")
    with pytest.raises(TlsConfigError, match="cannot use the certificate"):
        tls_from_env({**env_of(files), TLS_KEY_ENV: str(other.key)})  # not this cert's key
    assert tls_from_env(env_of(files)) == files


def _serve_and_ask(
    server_tls: TlsFiles, client_tls: TlsFiles | None, *, plain: bool = False
) -> str:
    """Start a TLS listener, ask it once through a Link; the answer or the error's name."""

    async def scenario() -> str:
        server = Pong()
        host, port = await server.start("127.0.0.1", 0, tls=server_tls.server_context())
        context = None if plain or client_tls is None else client_tls.client_context()
        link = Link(host, port, timeout_s=TIMEOUT_S, tls=context)
        try:
            answer = await link.request({"ping": True})
            return "pong" if answer.get("pong") else str(answer)
        except (OSError, TimeoutError) as err:
            return type(err).__name__
        finally:
            await link.close()
            await server.close()

    return asyncio.run(asyncio.wait_for(scenario(), 10 * TIMEOUT_S))


def test_a_link_with_the_sites_certificate_is_answered_over_tls(tmp_path: Path) -> None:
    files = make_pki(tmp_path)
    assert _serve_and_ask(files, files) == "pong"


def test_a_plain_client_or_a_strangers_certificate_gets_nothing(tmp_path: Path) -> None:
    files = make_pki(tmp_path / "ours")
    stranger = make_pki(tmp_path / "theirs", name="stranger")
    assert _serve_and_ask(files, None, plain=True) != "pong"
    assert _serve_and_ask(files, stranger) != "pong"  # its CA is not ours: refused both ways


def test_the_site_agents_ping_speaks_tls_too(tmp_path: Path) -> None:
    files = make_pki(tmp_path)

    async def scenario() -> tuple[str, str]:
        server = Pong()
        address = await server.start("127.0.0.1", 0, tls=files.server_context())
        loop = asyncio.get_running_loop()
        with_tls = await loop.run_in_executor(
            None,
            lambda: ping_answer(address, timeout_s=TIMEOUT_S, tls=files.client_context())[0],
        )
        plain = await loop.run_in_executor(
            None, lambda: ping_answer(address, timeout_s=TIMEOUT_S)[0]
        )
        await server.close()
        return with_tls, plain

    assert asyncio.run(scenario()) == (OK, UNANSWERED)
