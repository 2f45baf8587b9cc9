"""Calls that another thread can cut off: a conversation's deadline, a second Ctrl-C.

A thread blocked reading a socket is not woken when another thread closes the connection; it
is when the socket is shut down. The runner opens a `CancelScope` around every backend call,
on the worker's own thread; the network layer (`backends/zhipu.py`) attaches each socket the
call reads or writes to the scope current on that thread, and `scope.cancel(reason)` shuts
them down: the call fails at once with a transport error, and the runner reads `reason` to
tell a deadline or an abandoned call from a network fault.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from types import TracebackType

from glmrun.errors import Cancelled

_local = threading.local()


class CancelScope:
    """One backend call that may be cancelled from another thread; `with scope:` makes it
    the current scope of this thread."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline  # on the runner's clock; the runner's watchdog enforces it
        self.reason: str | None = None
        self.cancelled = threading.Event()
        self._lock = threading.RLock()  # cancel() may run in a signal handler meanwhile
        self._sockets: set[socket.socket] = set()

    def cancel(self, reason: str) -> None:
        """Cut the call off now (the first reason given is kept)."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            sockets = list(self._sockets)
        self.cancelled.set()
        for sock in sockets:
            _shut(sock)

    @contextlib.contextmanager
    def attached(self, sock: socket.socket | None) -> Iterator[None]:
        """Let cancel() shut `sock` down while the block runs; Cancelled if it already ran."""
        if sock is None:
            yield
            return
        with self._lock:
            if self.reason is not None:
                raise Cancelled(self.reason)
            self._sockets.add(sock)
        try:
            yield
        finally:
            with self._lock:
                self._sockets.discard(sock)

    def __enter__(self) -> CancelScope:
        self._outer = getattr(_local, "scope", None)
        _local.scope = self
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _local.scope = self._outer


def current() -> CancelScope | None:
    """The scope of the call running on this thread, if any."""
    scope: CancelScope | None = getattr(_local, "scope", None)
    return scope


@contextlib.contextmanager
def attached(sock: socket.socket | None) -> Iterator[None]:
    """Attach `sock` to this thread's current scope (if any) while the block runs."""
    scope = current()
    if scope is None:
        yield
        return
    with scope.attached(sock):
        yield


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: nothing left to wake
        sock.shutdown(socket.SHUT_RDWR)
