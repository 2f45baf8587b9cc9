"""The emulator's HTTP side: a loopback ThreadingHTTPServer, the routes, SSE writing, faults on
the wire (resets, hangs, cut streams, spoiled bodies).

Routes are Zhipu's v4 API under `/api/paas/v4`: chat (sync and SSE), async chat and its results,
the tokenizer, files and batches. What a model replies comes from `behaviour.py`, the stored
things from `stores.py`, the state from `state.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseServer, TCPServer
from typing import Any, cast
from urllib.parse import parse_qs

from .behaviour import Reply, build_reply
from .bomb import gzip_bomb
from .errors import STREAM_ERROR, WireError, code_error, error_body, status_fault
from .markers import BODY_FAULTS, BOMB_FAULT, RequestKind
from .requests import ChatRequest, check_model_and_messages, parse_chat_request, prompt_tokens
from .state import Emulator, RecordedRequest, route_of
from .stores import Task
from .wire import choices_json, completion_json, extras_json, stream_plan, usage_json

HANG_S = 30.0


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    emulator: Emulator

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn); loopback needs no DNS.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that vanish mid-answer are expected here (timeouts, cut streams)


class HTTPServer6(HTTPServer):
    address_family = socket.AF_INET6


_FILE_ROUTE = re.compile(r"/files/([^/]+)(/content)?")
_BATCH_ROUTE = re.compile(r"/batches/([^/]+)(/cancel)?")


class _Closed(Exception):
    """The connection was dropped on purpose (reset, cut stream, server stopping)."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, the body waits
    # for the client's delayed ACK (~40 ms per request on a kept-alive connection).
    disable_nagle_algorithm = True
    server_version = "glmrun-mock"
    sys_version = ""

    @property
    def mock(self) -> Emulator:
        return cast(HTTPServer, self.server).emulator

    def __init__(self, request: Any, client_address: Any, server: BaseServer) -> None:
        self._extra_headers: dict[str, str] = {}
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        with self.mock.lock:
            self.mock.connections.add(self.connection)
            stats = self.mock.stats
            stats.connections += 1
            stats.open_connections = len(self.mock.connections)
            stats.peak_connections = max(stats.peak_connections, stats.open_connections)

    def finish(self) -> None:
        with self.mock.lock:
            self.mock.connections.discard(self.connection)
            self.mock.stats.open_connections = len(self.mock.connections)
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
        if seconds > 0 and self.mock.stopping.wait(seconds):
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
        self.mock.record(
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
            self._dispatch(method, route_of(path), parse_qs(query), raw, body)
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
            raise code_error("1001")
        expected = self.mock.config.api_key
        if expected is not None and token.strip() != expected:
            raise code_error("1000")

    def _dispatch(
        self, method: str, route: str, query: dict[str, list[str]], raw: bytes, body: Any
    ) -> None:
        if route == "/chat/completions" and method == "POST":
            return self._chat(body, is_async=False)
        if route == "/async/chat/completions" and method == "POST":
            return self._chat(body, is_async=True)
        if route.startswith("/async-result/") and method == "GET":
            return self._async_result(route.removeprefix("/async-result/"))
        if route == "/tokenizer" and method == "POST":
            return self._tokenize(body)
        if route == "/files" or route.startswith("/files/"):
            return self._files(method, route, query, raw)
        if route == "/batches" or route.startswith("/batches/"):
            return self._batches(method, route, query, body)
        raise WireError(404, "404", f"mock: no route for {method} {route}")

    # ------------------------------------------------------------------ chat

    def _chat(self, body: Any, *, is_async: bool) -> None:
        mock = self.mock
        with mock.slot() as admitted:
            if not admitted:
                raise code_error("1302")
            fault = mock.pop_fault()
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
                fault = mock.ledger.pick(request.directives, request.conversation_key, kind)
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
                raise invalid or code_error("1210")
            if request.request_id is not None:
                mock.claim_request_id(request.request_id)
            reply = build_reply(request, script=mock.pop_script(), fault=fault)
            if mock.config.echo_key:
                reply = dataclasses.replace(reply, content=(reply.content or "") + self._echo())
            if is_async:
                return self._start_task(request, reply, fault)
            completion_id = mock.new_id("chatcmpl")
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
        result = {"choices": choices_json(reply), "usage": usage_json(reply),
                  **extras_json(reply)}
        task_id = mock.new_id("task")
        task = Task(
            id=task_id,
            request_id=request.request_id or task_id,
            model=request.model,
            polls=None if fault == "async_never" else polls,
            result=None if fault == "async_fail" else result,
            damage=fault if fault in BODY_FAULTS else None,
        )
        with mock.lock:
            mock.tasks.add(task)
        self._send_json(200, task.status_json("PROCESSING"), fault if fault == BOMB_FAULT else None)

    def _async_result(self, task_id: str) -> None:
        with self.mock.lock:
            answer, damage = self.mock.tasks.poll(task_id)
        self._send_json(200, answer, damage)

    # ------------------------------------------------------------------ tokenizer

    def _tokenize(self, body: Any) -> None:
        """`POST /tokenizer`, Zhipu's 文本分词器 (https://docs.bigmodel.cn/api-reference/模型-api/
        文本分词器): `{model, messages}` in, `{id, created, request_id, usage: {prompt_tokens}}`
        out. The count is the one a chat reply reports for the same messages; markers are
        counted as text (they are not read here)."""
        _, messages = check_model_and_messages(body)
        given = body.get("request_id") if isinstance(body, dict) else None
        token_id = self.mock.new_id("tokenizer")
        self._send_json(200, {
            "id": token_id,
            "created": int(time.time()),
            "request_id": given if isinstance(given, str) and given else token_id,
            "usage": {"prompt_tokens": prompt_tokens(messages)},
        })

    # ------------------------------------------------------------------ files and batches

    def _files(self, method: str, route: str, query: dict[str, list[str]], raw: bytes) -> None:
        files = self.mock.files
        with self.mock.lock:
            if route == "/files" and method == "POST":
                return self._send_json(200, files.upload(raw, self.headers.get(
                    "Content-Type", "")))
            if route == "/files" and method == "GET":
                return self._send_json(200, files.listing(query))
            m = _FILE_ROUTE.fullmatch(route)
            file = files.existing(m.group(1)) if m else None
        if m is None or file is None:
            raise WireError(404, "404", f"mock: no route for {method} {route}")
        if method == "GET" and m.group(2):
            return self._send(200, file.data, "application/octet-stream")
        if method == "GET":
            return self._send_json(200, file.to_json())
        if method == "DELETE" and not m.group(2):
            with self.mock.lock:
                files.delete(file.id)
            return self._send_json(200, {"id": file.id, "deleted": True, "object": "file"})
        raise WireError(404, "404", f"mock: no route for {method} {route}")

    def _batches(self, method: str, route: str, query: dict[str, list[str]], body: Any) -> None:
        mock = self.mock
        m = _BATCH_ROUTE.fullmatch(route)
        if route == "/batches" and method == "POST":
            with mock.lock:
                file = mock.files.get(str(body.get("input_file_id"))) if isinstance(
                    body, dict) else None
            record = mock.batches.plan(body, file, ledger=mock.ledger, new_id=mock.new_id,
                                       steps=mock.config.batch_steps, echo=self._echo())
            with mock.lock:
                answer = mock.batches.add(record)
            return self._send_json(200, answer)
        with mock.lock:
            if route == "/batches" and method == "GET":
                answer = mock.batches.listing(query)
            elif m and m.group(2) and method == "POST":
                answer = mock.batches.cancel(m.group(1))
            elif m and not m.group(2) and method == "GET":
                answer = mock.batches.retrieve(m.group(1), mock.files)
            else:
                raise WireError(404, "404", f"mock: no route for {method} {route}")
        self._send_json(200, answer)
