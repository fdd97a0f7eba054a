"""Run calls of this process inside a network namespace, through one thread that joined it.

A network namespace is a property of a thread, not of a process: ``setns(2)`` with
``CLONE_NEWNET`` moves only the calling thread. :class:`NamespaceThread` starts one thread,
moves it into the named namespace (``/run/netns/<name>``, as ``ip netns add`` made it) and
runs the callables given to :meth:`NamespaceThread.call` there, so every socket they open
belongs to that namespace (and threads they start inherit it). That is how the chaos
harness reads the store or checks etcd's health from the client namespace without a
subprocess, and never from the host namespace, whose routes send the harness's addresses
off this machine. Root only (``CAP_SYS_ADMIN``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
CALL_CEILING_S = 60.0


class NamespaceError(RuntimeError):
    """The thread could not join the namespace, or a call did not finish in time."""


_Job = tuple[Callable[[], object], "Future[object]"]


class NamespaceThread:
    """One worker thread inside the network namespace ``name``; ``call`` runs work there."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._joined: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name=f"netns-{name}", daemon=True)
        self._thread.start()
        self._joined.result(timeout=CALL_CEILING_S)  # raises NamespaceError if setns failed

    def _run(self) -> None:
        try:
            _join(self.name)
        except NamespaceError as exc:
            self._joined.set_exception(exc)
            return
        self._joined.set_result(None)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            work, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)

    def call(self, work: Callable[[], T], *, timeout_s: float = CALL_CEILING_S) -> T:
        """``work()`` run inside the namespace; its result or its exception."""
        if not self._thread.is_alive():
            raise NamespaceError(f"the thread for namespace {self.name} has stopped")
        future: Future[object] = Future()
        self._jobs.put((work, future))
        try:
            result = future.result(timeout=timeout_s)
        except TimeoutError:
            future.cancel()
            raise NamespaceError(
                f"a call in namespace {self.name} did not finish within {timeout_s} s"
            ) from None
        return result  # type: ignore[return-value]  # work's own result

    def close(self) -> None:
        """Stop the thread once its queued calls are done (it dies with the process anyway)."""
        self._jobs.put(None)
        self._thread.join(timeout=CALL_CEILING_S)

    def __enter__(self) -> NamespaceThread:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _join(name: str) -> None:
    path = os.path.join(NETNS_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NamespaceError(
            f"cannot open network namespace {path} ({exc.strerror}); does `ip netns list` "
            f"show {name}?"
        ) from None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise NamespaceError(
                f"setns into {name} failed: {os.strerror(errno)} (needs root: CAP_SYS_ADMIN)"
            )
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
