"""What lets a component run as a pod (the chart's pod template sets them): it listens on
``--bind-host`` while endpoints.json names its Service, serves /metrics at
``BFM_METRICS_LISTEN``, and reads its grants from ``--grants-url``; and bad values of
these, of ``--grants-listen`` and of the platform's ``template=`` are usage errors (exit 2)
naming the fix. A real ``bfm component run`` process on a SQLite store."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from failover.adapters.tls_dev import tls_env, write_dev_pki
from failover.cli.main import run
from failover.core.topology import default_topology
from failover.runtime.grants import Grants
from failover.runtime.grants_http import GrantsBoard, GrantsFetcher, GrantsServer
from failover.workload.endpoints import Endpoints, allocate

CEILING_S = 30.0
SERVICE = "bfm-a-eap.bfm.svc"  # what endpoints.json names in a cluster: not resolvable here


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def component_argv(run_dir: Path, *options: str) -> list[str]:
    """``bfm component run`` of a's eap in ``run_dir`` as a process."""
    return [
        *(sys.executable, "-m", "failover", "component", "run"),
        *("--site=a", "--component=eap", f"--run-dir={run_dir}", *options),
    ]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory whose endpoints.json names a Service for a's eap, as the chart's."""
    topology = default_topology(shards_per_component=2)
    endpoints = allocate(f"sqlite:///{tmp_path / 'bfm.db'}", topology)
    a = endpoints.sites["a"]
    modules = {**a.modules, "eap": (SERVICE, a.modules["eap"][1])}
    endpoints.sites["a"] = dataclasses.replace(a, modules=modules)
    endpoints.save(tmp_path)
    return tmp_path


@pytest.fixture
def grants() -> Iterator[tuple[GrantsBoard, str]]:
    board = GrantsBoard()
    server = GrantsServer(board, bind=("127.0.0.1", 0), monotonic=time.monotonic)
    host, port = server.start()
    yield board, f"http://{host}:{port}/grants"
    server.close()


def test_a_component_listens_on_its_bind_host_and_serves_metrics_where_told(
    run_dir: Path, grants: tuple[GrantsBoard, str]
) -> None:
    board, url = grants
    board.publish(Grants("a", 1, time.monotonic() + 60.0, {("eap", 0): 3}))
    metrics_port = free_port()
    module_port = Endpoints.load(run_dir).sites["a"].modules["eap"][1]
    env = {**os.environ, "BFM_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"}
    proc = subprocess.Popen(
        component_argv(run_dir, f"--grants-url={url}", "--bind-host=127.0.0.1"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        answer = None
        deadline_s = time.monotonic() + CEILING_S
        while time.monotonic() < deadline_s and answer is None and proc.poll() is None:
            try:
                answer = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1.0)
            except requests.ConnectionError:
                time.sleep(0.2)
        assert answer is not None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        assert answer.status_code == 200 and 'component="eap"' in answer.text
        # the module listens on the bind host, at the port endpoints.json names (metrics
        # start first: wait for it too)
        listening = False
        while time.monotonic() < deadline_s and not listening:
            try:
                socket.create_connection(("127.0.0.1", module_port), timeout=1.0).close()
                listening = True
            except ConnectionRefusedError:
                time.sleep(0.1)
        assert listening
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_without_a_bind_host_the_service_name_cannot_be_listened_on(run_dir: Path) -> None:
    """The test above can fail: the advertised name is not an address of this host."""
    done = subprocess.run(
        component_argv(run_dir, "--grants-url=http://127.0.0.1:9/grants"),
        env={**os.environ, "BFM_TELEMETRY": "off"},
        capture_output=True,
        text=True,
        timeout=CEILING_S,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"the eap cannot listen on {SERVICE}:" in done.stderr
    assert "--bind-host 0.0.0.0" in done.stderr and "internal error" not in done.stderr


@pytest.mark.parametrize("url", ["ftp://x/grants", "bfm-site-a:9465", "http://:9465/grants"])
def test_a_bad_grants_url_is_a_usage_error(
    url: str, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["component", "run", "--site=a", "--component=eap", f"--run-dir={run_dir}"]
    assert run([*args, f"--grants-url={url}"]) == 2
    err = capsys.readouterr().err
    assert "--grants-url" in err and "http://bfm-site-a:9465/grants" in err


def test_a_bad_metrics_address_of_a_component_is_a_usage_error(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BFM_METRICS_LISTEN", "9464")
    assert run(["component", "run", "--site=a", "--component=eap", f"--run-dir={run_dir}"]) == 2
    assert "BFM_METRICS_LISTEN" in capsys.readouterr().err


@pytest.mark.parametrize("listen", ["9465", "host:", "0.0.0.0:99999"])
def test_a_bad_grants_listen_is_a_usage_error(
    listen: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["site", "run", "--site=a", "--store=memory://", "--duration=1s"]
    assert run([*args, f"--grants-listen={listen}"]) == 2
    err = capsys.readouterr().err
    assert "--grants-listen" in err and "0.0.0.0:9465" in err


def test_a_bad_pod_template_is_a_usage_error_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = tmp_path / "pod.yaml"
    template.write_text("spec:\n  restartPolicy: Always\n")
    args = ["site", "run", "--site=a", "--store=memory://", "--duration=1s"]
    assert run([*args, f"--platform=kubernetes://bfm?template={template}"]) == 2
    err = capsys.readouterr().err
    assert "spec.restartPolicy is set by the platform" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flag", "kind", "named"),
    [
        ("--grants-listen", socket.SOCK_STREAM, "the grants server cannot listen on"),
        ("--listen", socket.SOCK_DGRAM, "the heartbeats (UDP) cannot listen on"),
    ],
)
def test_a_taken_port_is_a_usage_error_naming_the_flag(
    flag: str, kind: socket.SocketKind, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        port = taken.getsockname()[1]
        args = ["site", "run", "--site=a", "--store=memory://", "--duration=1s"]
        assert run([*args, f"{flag}=127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert named in err and f"give {flag} a free port" in err and "internal error" not in err


def test_with_tls_the_grants_url_must_be_https(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in tls_env(write_dev_pki(tmp_path / "pki")).items():
        monkeypatch.setenv(name, value)
    args = ["component", "run", "--site=a", "--component=eap", f"--run-dir={run_dir}"]
    assert run([*args, "--grants-url=http://bfm-site-a:9465/grants"]) == 2
    assert "must be https://: TLS is configured" in capsys.readouterr().err


def test_a_site_process_with_tls_serves_its_grants_over_mutual_tls(tmp_path: Path) -> None:
    files = write_dev_pki(tmp_path / "pki", addresses=("127.0.0.1",))
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "failover", "site", "run", "--site=a"),
            *("--store=memory://", "--duration=20s", f"--grants-listen=127.0.0.1:{port}"),
        ],
        env={**os.environ, **tls_env(files), "BFM_TELEMETRY": "off"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"https://127.0.0.1:{port}/grants"
        fetcher = GrantsFetcher(url, monotonic=time.monotonic, tls=files.client_context())
        deadline_s = time.monotonic() + CEILING_S
        while not fetcher.fetch_once() and time.monotonic() < deadline_s:
            time.sleep(0.2)
        assert fetcher.fetches == 1  # answered over TLS
        plain = GrantsFetcher(f"http://127.0.0.1:{port}/grants", monotonic=time.monotonic)
        assert not plain.fetch_once()  # never in the clear
    finally:
        proc.terminate()
        proc.wait(timeout=20)
