"""HTTP plumbing of the emulator: a loopback ThreadingHTTPServer speaking Zhipu's v4 wire format.

The reply logic lives in `behaviour.py` (chat) and `batches.py` (batch jobs); this module owns
the sockets, the routes, the stores (files, async tasks, batches) and the test hooks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import itertools
import json
import re
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseServer, TCPServer
from typing import Any, cast
from urllib.parse import parse_qs

from .batches import BatchRecord, plan_batch
from .behaviour import (
    BODY_FAULTS,
    BOMB_FAULT,
    STREAM_ERROR,
    ChatRequest,
    FaultLedger,
    JsonObject,
    Reply,
    RequestKind,
    ScriptedReply,
    WireError,
    build_reply,
    choices_json,
    completion_json,
    error_body,
    gzip_bomb,
    parse_chat_request,
    split_fault_count,
    status_fault,
    stream_plan,
    usage_json,
)

API_PREFIX = "/api/paas/v4"
HANG_S = 30.0


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


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class _Task:
    id: str
    request_id: str
    model: str
    polls: int | None  # PROCESSING answers still due; None: never finishes
    result: JsonObject | None  # choices + usage, or None when the task FAILs
    damage: str | None = None  # a BODY_FAULTS name spoiling the first SUCCESS answer

    def status_json(self, status: str) -> JsonObject:
        return {
            "id": self.id,
            "request_id": self.request_id,
            "model": self.model,
            "task_status": status,
        }


def _route(path: str) -> str:
    path = path.split("?", 1)[0]
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX) :]
    return "/" + path.strip("/")


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


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    mock: MockServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn); loopback needs no DNS.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that vanish mid-answer are expected here (timeouts, cut streams)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


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
        self.requests: list[RecordedRequest] = []
        self.stats = MockStats()
        self._lock = threading.RLock()  # re-entrant: batch steps store files under it
        self._changed = threading.Condition(self._lock)  # a request arrived or ended
        self._stopping = threading.Event()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._faults: deque[str] = deque()
        self._scripts: deque[ScriptedReply] = deque()
        self._ledger = FaultLedger()
        self._ids = itertools.count(1)
        self._files: dict[str, _File] = {}
        self._tasks: dict[str, _Task] = {}
        self._batches: dict[str, BatchRecord] = {}
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

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
        cls = _HTTPServer6 if ":" in self.host else _HTTPServer
        httpd = cls((self.host, self.port), _Handler)
        httpd.mock = self
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._stopping.clear()
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
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
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
        with self._lock:
            self._faults.extend(names)

    def script(self, *replies: Mapping[str, Any]) -> None:
        """Queue exact replies, used in order by chat/async-create requests before the default."""
        parsed = [ScriptedReply.from_dict(r) for r in replies]
        with self._lock:
            self._scripts.extend(parsed)

    def count(self, path_suffix: str = "/chat/completions", method: str = "POST") -> int:
        """Requests received (answered or not) on a route, e.g. `/chat/completions` (which does
        not include `/async/chat/completions`); a suffix without a leading `/` matches ends."""
        with self._lock:
            if path_suffix.startswith("/"):
                return self._counts[(method.upper(), _route(path_suffix))]
            return sum(
                n for (m, route), n in self._counts.items()
                if m == method.upper() and route.endswith(path_suffix)
            )

    def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `condition()` holds (checked under the server's lock each time a request
        arrives, or a chat request enters or leaves `stats.in_flight`); False on timeout."""
        with self._changed:
            return self._changed.wait_for(condition, timeout_s)

    # ------------------------------------------------------------------ used by the handler

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._counts[(request.method, _route(request.path))] += 1
            if self.config.record:
                self.requests.append(request)
            self._changed.notify_all()

    @contextlib.contextmanager
    def _slot(self) -> Iterator[bool]:
        """Admit a chat request unless `concurrency_limit` are already in flight."""
        with self._lock:
            limit = self.config.concurrency_limit
            if limit is not None and self.stats.in_flight >= limit:
                self.stats.rejected += 1
                admitted = False
            else:
                admitted = True
                self.stats.in_flight += 1
                self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
            self._changed.notify_all()
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self.stats.in_flight -= 1
                    self._changed.notify_all()

    def _pop_fault(self) -> str | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _pop_script(self) -> ScriptedReply | None:
        with self._lock:
            return self._scripts.popleft() if self._scripts else None

    def _store_file(self, filename: str, data: bytes, purpose: str) -> str:
        file = _File(self._new_id("file"), filename, purpose, data, int(time.time()))
        with self._lock:
            self._files[file.id] = file
        return file.id

    def _delete_file(self, file_id: str) -> None:
        with self._lock:
            self._files.pop(file_id, None)


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


# ---------------------------------------------------------------------- the handler

_FILE_ROUTE = re.compile(r"/files/([^/]+)(/content)?")
_BATCH_ROUTE = re.compile(r"/batches/([^/]+)(/cancel)?")


class _Closed(Exception):
    """The connection was dropped on purpose (reset, cut stream, server stopping)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, the body waits
    # for the client's delayed ACK (~40 ms per request on a kept-alive connection).
    disable_nagle_algorithm = True
    server_version = "glmrun-mock"
    sys_version = ""

    @property
    def mock(self) -> MockServer:
        return cast(_HTTPServer, self.server).mock

    def __init__(self, request: Any, client_address: Any, server: BaseServer) -> None:
        self._extra_headers: dict[str, str] = {}
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        with self.mock._lock:
            self.mock._connections.add(self.connection)
            stats = self.mock.stats
            stats.connections += 1
            stats.open_connections = len(self.mock._connections)
            stats.peak_connections = max(stats.peak_connections, stats.open_connections)

    def finish(self) -> None:
        with self.mock._lock:
            self.mock._connections.discard(self.connection)
            self.mock.stats.open_connections = len(self.mock._connections)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # ------------------------------------------------------------------ plumbing

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, data: bytes, content_type: str, fault: str | None = None) -> None:
        """Send a whole body; `fault` may spoil it (cut, empty, or a gzip bomb)."""
        if fault == "json_cut":
            data = data[: len(data) // 2]
        elif fault == "json_empty":
            data = b""
        elif fault == BOMB_FAULT:
            data = gzip_bomb(data, self.mock.config.bomb_bytes)
            self._extra_headers["Content-Encoding"] = "gzip"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in self._extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status: int, obj: object, fault: str | None = None) -> None:
        if fault == "message_null" and isinstance(obj, dict) and obj.get("choices"):
            obj = {**obj, "choices": [{**obj["choices"][0], "message": None}]}
        data = json.dumps(obj, ensure_ascii=False).encode()
        self._send(status, data, "application/json; charset=utf-8", fault)

    def _echo(self) -> str:
        """MockConfig.echo_key's text (empty when off)."""
        if not self.mock.config.echo_key:
            return ""
        value = self.headers.get("Authorization", "")
        token = value.partition(" ")[2].strip()
        halves = " | ".join(f"part: {p}" for p in token.split(".")) if "." in token else ""
        return f" [echo: Authorization: {value} | key: {token} | {halves}]"

    def _send_error(self, error: WireError) -> None:
        if self.mock.config.echo_key:
            error = WireError(error.status, error.code, error.message + self._echo())
        retry_after = self.mock.config.retry_after_s
        if error.status == 429 and retry_after is not None:
            self._extra_headers["Retry-After"] = format(retry_after, "g")
        self._send_json(error.status, error.body())

    def _sleep(self, seconds: float) -> None:
        """Wait, but give up the request at once when the server stops."""
        if seconds > 0 and self.mock._stopping.wait(seconds):
            raise _Closed

    def _reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), answering nothing."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        self.rfile.close()
        self.connection.close()
        raise _Closed

    def _handle(self, method: str) -> None:
        self._extra_headers = {}
        path, _, query = self.path.partition("?")
        raw = self._read_body()
        body: Any = None
        if raw and "multipart/" not in self.headers.get("Content-Type", ""):
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
        self.mock._record(
            RecordedRequest(
                method=method,
                path=path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                at=time.monotonic(),
                query=query,
            )
        )
        try:
            self._check_auth()
            self._dispatch(method, _route(path), parse_qs(query), raw, body)
        except WireError as error:
            self._send_error(error)
        except _Closed:
            self.close_connection = True
        except OSError:  # the client went away
            self.close_connection = True

    def _check_auth(self) -> None:
        value = self.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise WireError(
                401, "1001", "Header中未收到Authentication参数，无法进行身份验证。"
            )
        expected = self.mock.config.api_key
        if expected is not None and token.strip() != expected:
            raise WireError(401, "1000", "身份验证失败。")

    def _dispatch(
        self, method: str, route: str, query: dict[str, list[str]], raw: bytes, body: Any
    ) -> None:
        if route == "/chat/completions" and method == "POST":
            return self._chat(body, is_async=False)
        if route == "/async/chat/completions" and method == "POST":
            return self._chat(body, is_async=True)
        if route.startswith("/async-result/") and method == "GET":
            return self._async_result(route.removeprefix("/async-result/"))
        if route == "/files" and method == "POST":
            return self._upload(raw)
        if route == "/files" and method == "GET":
            return self._list_files(query)
        if m := _FILE_ROUTE.fullmatch(route):
            return self._file(method, m.group(1), content=bool(m.group(2)))
        if route == "/batches" and method == "POST":
            return self._create_batch(body)
        if route == "/batches" and method == "GET":
            return self._list_batches(query)
        if m := _BATCH_ROUTE.fullmatch(route):
            if m.group(2) and method == "POST":
                return self._cancel_batch(m.group(1))
            if not m.group(2) and method == "GET":
                return self._retrieve_batch(m.group(1))
        raise WireError(404, "404", f"mock: no route for {method} {route}")

    # ------------------------------------------------------------------ chat

    def _chat(self, body: Any, *, is_async: bool) -> None:
        mock = self.mock
        with mock._slot() as admitted:
            if not admitted:
                raise WireError(
                    429, "1302", "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"
                )
            fault = mock._pop_fault()
            request: ChatRequest | None = None
            invalid: WireError | None = None
            try:
                request = parse_chat_request(body)
            except WireError as exc:
                invalid = exc
            kind: RequestKind = (
                "async" if is_async else "stream" if request and request.stream else "sync"
            )
            if fault is None and request is not None:
                fault = mock._ledger.pick(request, kind)
            marks = request.directives if request else None
            latency = mock.config.latency_s
            if marks and marks.latency_ms is not None:
                latency += marks.latency_ms / 1000
            self._sleep(latency)
            if fault == "hang":
                self._sleep(HANG_S)
                raise _Closed
            if fault == "reset":
                self._reset()
            error = status_fault(fault) if fault else None
            if error is not None:
                raise error
            if request is None:
                raise invalid or WireError(400, "1210", "API 调用参数有误，请检查文档。")
            reply = build_reply(request, script=mock._pop_script(), fault=fault)
            if mock.config.echo_key:
                reply = dataclasses.replace(reply, content=(reply.content or "") + self._echo())
            if is_async:
                return self._start_task(request, reply, fault)
            completion_id = mock._new_id("chatcmpl")
            request_id = request.request_id or completion_id
            created = int(time.time())
            if not request.stream:
                return self._send_json(
                    200,
                    completion_json(
                        reply, completion_id=completion_id, request_id=request_id,
                        created=created, model=request.model,
                    ),
                    fault,
                )
            delay = mock.config.chunk_delay_s
            if marks and marks.chunk_delay_ms is not None:
                delay = marks.chunk_delay_ms / 1000
            self._stream(reply, completion_id, created, request, fault, delay)

    def _stream(
        self, reply: Reply, completion_id: str, created: int, request: ChatRequest,
        fault: str | None, delay: float,
    ) -> None:
        plan = stream_plan(reply, completion_id=completion_id, created=created,
                           model=request.model, tool_stream=request.body.get("tool_stream") is True)
        if fault == BOMB_FAULT:
            events = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n"
                      for c in (*plan.body, plan.final)]
            text = "\n" + "".join(events) + "data: [DONE]\n\n"
            return self._send(200, text.encode(), "text/event-stream; charset=utf-8", fault)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        if fault == "no_done":
            self.send_header("Connection", "close")
        self.end_headers()
        first = True

        def event(text: str) -> None:
            nonlocal first
            if not first:
                self._sleep(delay)
            first = False
            data = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def data(obj: object) -> None:
            event(f"data: {json.dumps(obj, ensure_ascii=False)}\n\n")

        half = max(1, len(plan.body) // 2) if plan.body else 0
        if fault in ("stream_cut", "stream_cut_done"):
            for chunk in plan.body[:half]:
                data(chunk)
            if fault == "stream_cut":
                raise _Closed  # no terminating chunk: the client sees a truncated body
            event("data: [DONE]\n\n")
        elif fault == "stream_stall":
            for chunk in plan.body[:half]:
                data(chunk)
            self._sleep(HANG_S)  # the client's read timeout ends it, or the server stopping
            raise _Closed
        elif fault in ("stream_bad_json", "stream_retry_line"):
            for chunk in plan.body[:2]:
                data(chunk)
            if fault == "stream_retry_line":  # valid SSE, though not JSON: a reconnect delay
                event("retry: 3000\n\n")
            else:  # a chunk cut inside its JSON
                event(f"data: {json.dumps(plan.body[0], ensure_ascii=False)[:40]}\n\n")
            for chunk in plan.body[2:]:
                data(chunk)
            data(plan.final)
            event("data: [DONE]\n\n")
        elif fault in ("stream_error_event", "stream_data_error"):
            for chunk in plan.body[:2]:
                data(chunk)
            error = json.dumps(error_body(*STREAM_ERROR), ensure_ascii=False)
            prefix = "event: error\n" if fault == "stream_error_event" else ""
            event(f"{prefix}data: {error}\n\n")
        else:
            for chunk in plan.body:
                data(chunk)
            data(plan.final)
            if fault == "no_done":
                self.close_connection = True
            else:
                event("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _start_task(self, request: ChatRequest, reply: Reply, fault: str | None) -> None:
        mock = self.mock
        polls = request.directives.async_polls
        if polls is None:
            polls = mock.config.async_polls
        result = {"choices": choices_json(reply), "usage": usage_json(reply)}
        task_id = mock._new_id("task")
        task = _Task(
            id=task_id,
            request_id=request.request_id or task_id,
            model=request.model,
            polls=None if fault == "async_never" else polls,
            result=None if fault == "async_fail" else result,
            damage=fault if fault in BODY_FAULTS else None,
        )
        with mock._lock:
            mock._tasks[task.id] = task
        self._send_json(200, task.status_json("PROCESSING"), fault if fault == BOMB_FAULT else None)

    def _async_result(self, task_id: str) -> None:
        mock = self.mock
        damage: str | None = None
        with mock._lock:
            task = mock._tasks.get(task_id)
            if task is None:
                raise WireError(404, "404", f"任务不存在 (no async task {task_id!r})")
            if task.polls is None or task.polls > 0:
                if task.polls is not None:
                    task.polls -= 1
                answer = task.status_json("PROCESSING")
            elif task.result is None:
                answer = task.status_json("FAIL")
            else:
                answer = {**task.status_json("SUCCESS"), **task.result}
                damage, task.damage = task.damage, None
        self._send_json(200, answer, damage)

    # ------------------------------------------------------------------ files

    def _upload(self, raw: bytes) -> None:
        fields = _parse_multipart(raw, self.headers.get("Content-Type", ""))
        upload = fields.get("file")
        purpose = fields.get("purpose")
        if upload is None or upload[0] is None:
            raise WireError(400, "1210", "API 调用参数有误，请检查文档。(file is required)")
        if purpose is None or not purpose[1]:
            raise WireError(400, "1210", "API 调用参数有误，请检查文档。(purpose is required)")
        file_id = self.mock._store_file(upload[0], upload[1], purpose[1].decode())
        with self.mock._lock:
            answer = self.mock._files[file_id].to_json()
        self._send_json(200, answer)

    def _list_files(self, query: dict[str, list[str]]) -> None:
        purpose = query.get("purpose", [None])[0]
        with self.mock._lock:
            files = [f for f in self.mock._files.values() if purpose in (None, f.purpose)]
        if query.get("order", ["desc"])[0] != "asc":
            files.reverse()
        page, has_more = _page([f.id for f in files], query)
        by_id = {f.id: f for f in files}
        self._send_json(
            200,
            {"object": "list", "data": [by_id[i].to_json() for i in page], "has_more": has_more},
        )

    def _file(self, method: str, file_id: str, *, content: bool) -> None:
        with self.mock._lock:
            file = self.mock._files.get(file_id)
            if file is None:
                raise WireError(404, "404", f"文件不存在 (no file {file_id!r})")
            if method == "DELETE" and not content:
                del self.mock._files[file_id]
        if method == "GET" and content:
            return self._send(200, file.data, "application/octet-stream")
        if method == "GET":
            return self._send_json(200, file.to_json())
        if method == "DELETE" and not content:
            return self._send_json(200, {"id": file_id, "deleted": True, "object": "file"})
        raise WireError(404, "404", f"mock: no route for {method} /files/{file_id}")

    # ------------------------------------------------------------------ batches

    def _create_batch(self, body: Any) -> None:
        mock = self.mock
        if not isinstance(body, Mapping):
            raise WireError(400, "1210", "API 调用参数有误，请检查文档。(JSON body expected)")
        input_file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        with mock._lock:
            file = mock._files.get(str(input_file_id))
        if file is None:
            raise WireError(400, "1210", f"input_file_id {input_file_id!r} 不存在")
        if not isinstance(endpoint, str) or not endpoint.endswith("/chat/completions"):
            raise WireError(
                400, "1210", f"mock: only chat completion batches are supported, not {endpoint!r}"
            )
        now = int(time.time())
        record = BatchRecord(
            id=mock._new_id("batch"),
            input_file_id=file.id,
            endpoint=endpoint,
            completion_window=str(body.get("completion_window") or "24h"),
            metadata=body.get("metadata"),
            auto_delete_input_file=body.get("auto_delete_input_file", True) is not False,
            created_at=now,
            plan=plan_batch(file.data, ledger=mock._ledger, new_id=mock._new_id, now=now,
                            echo=self._echo()),
            steps=mock.config.batch_steps,
        )
        with mock._lock:
            mock._batches[record.id] = record
            answer = record.to_json()
        self._send_json(200, answer)

    def _batch(self, batch_id: str) -> BatchRecord:
        record = self.mock._batches.get(batch_id)
        if record is None:
            raise WireError(404, "404", f"batch 不存在 (no batch {batch_id!r})")
        return record

    def _retrieve_batch(self, batch_id: str) -> None:
        mock = self.mock
        with mock._lock:
            record = self._batch(batch_id)
            record.advance(int(time.time()), mock._store_file, mock._delete_file)
            answer = record.to_json()
        self._send_json(200, answer)

    def _cancel_batch(self, batch_id: str) -> None:
        with self.mock._lock:
            record = self._batch(batch_id)
            record.cancel(int(time.time()))
            answer = record.to_json()
        self._send_json(200, answer)

    def _list_batches(self, query: dict[str, list[str]]) -> None:
        with self.mock._lock:
            records = list(reversed(self.mock._batches.values()))
            page, has_more = _page([r.id for r in records], query)
            by_id = {r.id: r for r in records}
            data = [by_id[i].to_json() for i in page]
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
                "has_more": has_more,
            },
        )


def _page(ids: list[str], query: dict[str, list[str]]) -> tuple[list[str], bool]:
    """Cursor pagination: the ids after `after`, at most `limit` (default 20)."""
    after = query.get("after", [None])[0]
    if after in ids:
        ids = ids[ids.index(after) + 1 :]
    try:
        limit = max(1, min(100, int(query.get("limit", ["20"])[0])))
    except ValueError:
        limit = 20
    return ids[:limit], len(ids) > limit


def _parse_multipart(raw: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """Form fields by name -> (filename or None, bytes); enough for the SDK's uploads."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise WireError(400, "1210", "API 调用参数有误，请检查文档。(multipart body expected)")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in (b"\r\n" + raw).split(b"\r\n--" + m.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        params = dict(
            (k.lower(), v.replace("%22", '"'))
            for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', head.decode("utf-8", "replace"))
        )
        if "name" in params:
            fields[params["name"]] = (params.get("filename"), data)
    return fields
