"""NamespaceThread: calls of this process run inside a network namespace, nowhere else.

Root only (skipped with the reason otherwise; a failure under CI=true). Every socket here
is opened inside the harness's namespaces: nothing is sent from the host namespace.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterator

import pytest

from failover.chaos import netns
from failover.chaos.netns import Network
from failover.chaos.nsthread import NamespaceError, NamespaceThread

pytestmark = pytest.mark.scenario


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    reason = netns.available()
    if reason is not None:
        pytest.skip(f"needs network namespaces: {reason}")
    with Network() as network:
        yield network


def _bind(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def test_calls_run_inside_the_namespace_and_only_there(net: Network) -> None:
    address = net.addresses["a"]
    with pytest.raises(OSError) as info:
        _bind(address)  # the host namespace has no such address
    assert info.value.errno == errno.EADDRNOTAVAIL
    with NamespaceThread(net.namespace("a")) as inside:
        assert inside.call(lambda: _bind(address)) > 0
        # a thread started there stays there
        ports: list[int] = []

        def spawn() -> None:
            thread = threading.Thread(target=lambda: ports.append(_bind(address)))
            thread.start()
            thread.join()

        inside.call(spawn)
        assert ports and ports[0] > 0
    with pytest.raises(OSError):
        _bind(address)  # and this thread never moved


def test_traffic_between_namespaces_through_two_threads(net: Network) -> None:
    with NamespaceThread(net.namespace("a")) as in_a, NamespaceThread(net.namespace("c")) as in_c:
        # a socket belongs to the namespace of the thread that made it, wherever it is used
        server = in_a.call(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        server.bind((net.addresses["a"], 0))
        server.listen(1)
        port = server.getsockname()[1]

        def echo_once() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(16))

        echo = threading.Thread(target=echo_once)
        echo.start()

        def ask() -> bytes:
            with socket.create_connection((net.addresses["a"], port), timeout=5) as conn:
                conn.sendall(b"hello")
                return conn.recv(16)

        assert in_c.call(ask) == b"hello"
        echo.join(timeout=5)
    server.close()


def test_an_unknown_namespace_is_a_clear_error() -> None:
    if netns.available() is not None:
        pytest.skip("needs root")
    with pytest.raises(NamespaceError, match="does `ip netns list` show"):
        NamespaceThread("bfm-no-such-namespace")


def test_a_call_that_raises_hands_the_exception_back(net: Network) -> None:
    with NamespaceThread(net.namespace("b")) as inside:
        with pytest.raises(ZeroDivisionError):
            inside.call(lambda: 1 // 0)
        assert inside.call(lambda: 41 + 1) == 42  # and the thread goes on
