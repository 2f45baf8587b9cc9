"""`MockServer`: the emulator's lifecycle (start, stop on a free loopback port) and test hooks.

The routes live in `http.py`, the state they share in `state.py`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .behaviour import ScriptedReply
from .errors import WireError
from .http import Handler, HTTPServer, HTTPServer6
from .markers import split_fault_count
from .state import API_PREFIX, Emulator, MockConfig, MockStats, RecordedRequest, route_of
from .stores import StoredFile


def _loopback_host(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"the mock server binds loopback only, not {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"the mock server binds loopback only, not {host!r}")
    return host


class MockServer:
    """A loopback Zhipu v4 API: `with MockServer() as s: ZhipuAI(..., base_url=s.base_url)`.

    Test hooks: `inject(*faults)` queues faults for the next chat/async-create requests (before
    any marker), `script(*replies)` queues exact replies, `requests`/`count()` show what arrived,
    `stats` the in-flight peak and the 429s caused by `concurrency_limit`.
    """

    def __init__(
        self, config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or MockConfig()
        self.host = _loopback_host(host)
        self.port = port
        self.emulator = Emulator(self.config)
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (with `MockConfig.record`), in order."""
        return self.emulator.requests

    @property
    def stats(self) -> MockStats:
        return self.emulator.stats

    def files(self) -> list[StoredFile]:
        """Every file stored now: uploads, batch outputs (oldest first)."""
        with self.emulator.lock:
            return self.emulator.files.all()

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the mock server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{API_PREFIX}"

    def start(self) -> MockServer:
        if self._httpd is not None:
            return self
        cls = HTTPServer6 if ":" in self.host else HTTPServer
        httpd = cls((self.host, self.port), Handler)
        httpd.emulator = self.emulator
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self.emulator.stopping.clear()
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"glmrun-mock:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging and sleeping requests wake up and drop their connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.emulator.stopping.set()
        httpd.shutdown()
        with self.emulator.lock:
            connections = list(self.emulator.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test hooks

    def inject(self, *faults: str) -> None:
        """Queue faults (marker names; `500x2` queues two) for the next chat/async-create
        requests, one each, whatever their content."""
        names: list[str] = []
        for fault in faults:
            try:
                name, times = split_fault_count(fault)
            except WireError as exc:
                raise ValueError(exc.message) from None
            names += [name] * (times or 1)
        with self.emulator.lock:
            self.emulator.faults.extend(names)

    def script(self, *replies: Mapping[str, Any]) -> None:
        """Queue exact replies, used in order by chat/async-create requests before the default."""
        parsed = [ScriptedReply.from_dict(r) for r in replies]
        with self.emulator.lock:
            self.emulator.scripts.extend(parsed)

    def count(self, path_suffix: str = "/chat/completions", method: str = "POST") -> int:
        """Requests received (answered or not) on a route, e.g. `/chat/completions` (which does
        not include `/async/chat/completions`); a suffix without a leading `/` matches ends."""
        counts = self.emulator.counts
        with self.emulator.lock:
            if path_suffix.startswith("/"):
                return counts[(method.upper(), route_of(path_suffix))]
            return sum(
                n for (m, route), n in counts.items()
                if m == method.upper() and route.endswith(path_suffix)
            )

    def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `condition()` holds (checked under the server's lock each time a request
        arrives, or a chat request enters or leaves `stats.in_flight`); False on timeout."""
        with self.emulator.changed:
            return self.emulator.changed.wait_for(condition, timeout_s)


def serve(config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the emulator in the foreground (`glmrun mock-server`) until Ctrl-C."""
    server = MockServer(config, host, port).start()
    print(f"glmrun mock server listening on {server.base_url}", flush=True)
    print(f"  export ZHIPUAI_BASE_URL={server.base_url}  # Ctrl-C stops", flush=True)
    try:
        while True:  # Ctrl-C lands in sleep(): one landing inside Event.wait() could leave the
            time.sleep(3600)  # event's lock held, and stop() would hang setting the event
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
