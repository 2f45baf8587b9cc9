"""Calls that another thread can cut off: a conversation's deadline, a second Ctrl-C.

A thread blocked reading a socket is not woken when another thread closes the connection; it
is when the socket is shut down. The runner opens a `CancelScope` around every backend call,
on the worker's own thread; the network layer (`cancellable_transport`, under both SDK
adapters) attaches each socket the call reads or writes to the scope current on that thread,
and `scope.cancel(reason)` shuts them down: the call fails at once with a transport error,
and the runner reads `reason` to tell a deadline or an abandoned call from a network fault.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpcore
import httpx

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


def cancellable_transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport whose sockets a `cancel.CancelScope` can shut down mid-call.

    httpx 0.28 takes no network backend, so the one its connection pool got is wrapped in
    place; should a later httpx lay its pool out differently, calls stay uncancellable (and
    tests/test_deadlines.py says so), nothing else changes.
    """
    transport = httpx.HTTPTransport(limits=limits)
    pool = getattr(transport, "_pool", None)
    inner = getattr(pool, "_network_backend", None)
    if isinstance(pool, httpcore.ConnectionPool) and isinstance(inner, httpcore.NetworkBackend):
        pool._network_backend = _CancellableNetwork(inner)
    return transport


class _CancellableNetwork(httpcore.NetworkBackend):
    """Connections whose every read and write is attached to the calling thread's scope."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None, socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        scope = current()
        if scope is not None and scope.reason is not None:
            raise httpcore.ConnectError(f"call cancelled ({scope.reason})")
        return _CancellableStream(self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        return _CancellableStream(self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _CancellableStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self._socket = inner.get_extra_info("socket")

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            with attached(self._socket):
                return self._inner.read(max_bytes, timeout)
        except Cancelled as exc:
            raise httpcore.ReadError(f"call cancelled ({exc})") from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            with attached(self._socket):
                self._inner.write(buffer, timeout)
        except Cancelled as exc:
            raise httpcore.WriteError(f"call cancelled ({exc})") from None

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _CancellableStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
