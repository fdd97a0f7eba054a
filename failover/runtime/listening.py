"""A server that cannot listen where it was told: one error, naming the address and the fix.

The site process's heartbeats and grants, and a component's module and router, each bind an
address an operator gave (a flag, endpoints.json). A port already taken, or a host that is
not an address of this machine (a Service name in a pod), is then an input error the
commands report as such (exit 2), never a traceback.
"""

from __future__ import annotations


class ListenError(ValueError):
    """A server cannot listen where it was told (the message names the address and fix)."""


def listen_error(what: str, address: tuple[str, int], err: OSError, fix: str) -> ListenError:
    """The error of ``what`` failing to listen on ``address`` with ``err``; ``fix``: what
    to change."""
    host, port = address
    return ListenError(f"{what} cannot listen on {host}:{port} ({err.strerror or err}): {fix}")
