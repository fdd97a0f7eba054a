"""`bfm logstore serve`: the embedded Loki-compatible log and trace store, standalone.

It serves Loki's push and query API, OTLP/HTTP logs (``/otlp/v1/logs``) and traces
(``/v1/traces``), and Tempo's ``/api/traces/<id>`` (``bfm_observe.logstore.server``) from
one SQLite file, until SIGINT or SIGTERM. ``bfm demo`` runs one per run directory.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from failover.cli.durations import duration_option
from failover.cli.errors import UsageError

DEFAULT_LISTEN = "127.0.0.1:3100"
DEFAULT_MAX_DISK = "20GB"  # of the site VM's 30 GB SSD, leaving room for the rest
TOKEN_ENV = "BFM_LOGSTORE_TOKEN"  # noqa: S105 - a variable's name, not a secret
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def parse_size_bytes(text: str) -> int:
    """``30GB``, ``512MiB``, ``1000000`` -> bytes."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise UsageError(
            f"--max-disk {text!r} is not a size; give bytes or a number with B, KB, MB, GB, "
            "TB, KiB, MiB, GiB or TiB (20GB)"
        )
    size_bytes = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    if size_bytes < 1_000_000:
        raise UsageError(f"--max-disk {text!r} is below 1 MB; the store needs room to work")
    return size_bytes


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"--listen {text!r} is not HOST:PORT (127.0.0.1:3100; port 0: any free)")
    return host.strip("[]"), int(port_text)


def serve(
    data: Annotated[
        Path, typer.Option("--data", help="The store's SQLite file (made if missing).")
    ] = Path("bfm-logs.db"),
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT; port 0 picks a free one.")
    ] = DEFAULT_LISTEN,
    retention_s: Annotated[
        float,
        typer.Option(
            "--retention", parser=duration_option, metavar="DURATION", help="Keep lines this long."
        ),
    ] = 7 * 86400.0,
    max_disk: Annotated[
        str, typer.Option("--max-disk", help="Disk budget; the oldest lines go first past it.")
    ] = DEFAULT_MAX_DISK,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar=TOKEN_ENV, help="Require 'Authorization: Bearer TOKEN'."),
    ] = None,
    multi_tenant: Annotated[
        bool,
        typer.Option("--multi-tenant", help="Require X-Scope-OrgID and keep tenants apart."),
    ] = False,
    url_file: Annotated[
        Path | None,
        typer.Option("--url-file", help="Write the URL here once serving (for scripts)."),
    ] = None,
) -> None:
    """Serve the embedded log and trace store until interrupted."""
    from bfm_observe.logstore.server import LogStoreServer
    from bfm_observe.logstore.store import LogStore, LogStoreError
    from failover.adapters.files import write_text_atomically

    host, port = parse_listen(listen)
    max_disk_bytes = parse_size_bytes(max_disk)
    if retention_s <= 0:
        raise UsageError("--retention must be longer than 0 s")
    try:
        store = LogStore(data, retention_s=retention_s, max_disk_bytes=max_disk_bytes)
    except LogStoreError as exc:
        raise UsageError(str(exc)) from None
    try:
        server = LogStoreServer(store, host=host, port=port, token=token, multi_tenant=multi_tenant)
    except OSError as exc:
        store.close()
        raise UsageError(
            f"cannot listen on {listen}: {exc.strerror or exc}; pick another --listen"
        ) from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    if url_file is not None:
        write_text_atomically(url_file, server.url + "\n")
    auth = " (bearer token required)" if token else ""
    typer.echo(f"bfm logstore: serving {data} at {server.url}{auth}", err=True)
    typer.echo(
        f"bfm logstore: try: BFM_LOKI_URL={server.url} bfm logs '{{site=~\".+\"}}'", err=True
    )
    try:
        stop.wait()
    finally:
        server.stop()
        store.close()
        typer.echo(f"bfm logstore: stopped (pid {os.getpid()})", err=True)


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="The embedded Loki-compatible log and trace store.", no_args_is_help=True
    )
    group.command("serve")(serve)
    app.add_typer(group, name="logstore")
