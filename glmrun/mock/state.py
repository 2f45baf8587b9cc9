"""What one emulator holds while it runs: its settings, counters, queued hooks and stores.

`MockServer` (server.py) owns an `Emulator` and the socket; the handler (http.py) reads and
updates it under its lock. Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .behaviour import ScriptedReply
from .errors import code_error
from .markers import FaultLedger
from .stores import BatchStore, FileStore, TaskStore

API_PREFIX = "/api/paas/v4"


@dataclass
class MockConfig:
    """How the emulator behaves; markers in a request can override latency and delays."""

    latency_s: float = 0.0  # added before answering each chat request
    chunk_delay_s: float = 0.0  # between SSE chunks
    concurrency_limit: int | None = None  # beyond it: HTTP 429 code 1302
    retry_after_s: float | None = None  # if set, 429s carry a Retry-After header
    async_polls: int = 2  # PROCESSING answers before SUCCESS for async tasks
    batch_steps: int = 2  # retrieve() calls a batch spends in_progress before completed
    api_key: str | None = None  # when set, any other Bearer token -> 401 code 1000
    # A leaky server, to test glmrun's redaction: every reply (streamed in pieces) and every
    # error message ends with the Authorization header it got, the key, and each half of it.
    echo_key: bool = False
    record: bool = True  # keep every request in MockServer.requests
    bomb_bytes: int = 1 << 30  # what a [[fault:gzip_bomb]] body expands to


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: header names lower-cased, `body` the parsed JSON or None,
    `at` from time.monotonic(), `path` without the query string (that is in `query`)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    query: str = ""


@dataclass
class MockStats:
    """Chat/async-create requests in flight now, the most ever at once, 429s for the limit,
    and TCP connections: accepted in all, open now (kept alive or busy), the most at once."""

    in_flight: int = 0
    peak_in_flight: int = 0
    rejected: int = 0
    connections: int = 0
    open_connections: int = 0
    peak_connections: int = 0


def route_of(path: str) -> str:
    """`/api/paas/v4/chat/completions?x` -> `/chat/completions`."""
    path = path.split("?", 1)[0]
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX) :]
    return "/" + path.strip("/")


class Emulator:
    """The state behind one emulator's routes; `lock` guards every field a handler changes."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.requests: list[RecordedRequest] = []
        self.stats = MockStats()
        self.lock = threading.RLock()  # re-entrant: batch steps store files under it
        self.changed = threading.Condition(self.lock)  # a request arrived or ended
        self.stopping = threading.Event()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.faults: deque[str] = deque()
        self.scripts: deque[ScriptedReply] = deque()
        self.ledger = FaultLedger()
        self._ids = itertools.count(1)
        self.files = FileStore(self.new_id)
        self.tasks = TaskStore()
        self.batches = BatchStore()
        self.connections: set[socket.socket] = set()
        self._request_ids: set[str] = set()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.counts[(request.method, route_of(request.path))] += 1
            if self.config.record:
                self.requests.append(request)
            self.changed.notify_all()

    @contextlib.contextmanager
    def slot(self) -> Iterator[bool]:
        """Admit a chat request unless `concurrency_limit` are already in flight."""
        with self.lock:
            limit = self.config.concurrency_limit
            if limit is not None and self.stats.in_flight >= limit:
                self.stats.rejected += 1
                admitted = False
            else:
                admitted = True
                self.stats.in_flight += 1
                self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
            self.changed.notify_all()
        try:
            yield admitted
        finally:
            if admitted:
                with self.lock:
                    self.stats.in_flight -= 1
                    self.changed.notify_all()

    def pop_fault(self) -> str | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None

    def pop_script(self) -> ScriptedReply | None:
        with self.lock:
            return self.scripts.popleft() if self.scripts else None

    def claim_request_id(self, request_id: str) -> None:
        """A client's `request_id` names one request: a second request with an id already
        answered is refused with 1231 "您已有请求：<id>" (Zhipu's code table), whatever its
        body. Only requests that got an answer claim their id; one refused before that (a
        fault, a 429) leaves it free, so a retry with the same id is answered."""
        with self.lock:
            if request_id in self._request_ids:
                raise code_error("1231", request_id=request_id)
            self._request_ids.add(request_id)
