"""A scripted backend for fast tests: enqueue replies or errors, read back what was sent."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from glmrun import errors
from glmrun.backends.base import DeltaSink, RequestIdentity, TaskTicket
from glmrun.types import ChatRequest, Delta, Reply, Usage

Responder = Callable[[ChatRequest], Reply]


def text_reply(content: str, **kw: object) -> Reply:
    """A plain stop reply with usage counted in characters."""
    usage = Usage(1, len(content), 1 + len(content))
    return Reply(content=content, finish_reason="stop", usage=usage, **kw)  # type: ignore[arg-type]


class ScriptedBackend:
    """Answers from a queue of Replies / ApiErrors, else from `default` (echo by default)."""

    def __init__(self, default: Responder | None = None, async_polls: int = 1) -> None:
        self._queue: deque[Reply | errors.ApiError] = deque()
        self._lock = threading.Lock()
        self.default = default or (lambda r: text_reply(f"echo: {_last_user(r)}"))
        self.history: list[ChatRequest] = []
        self.identities: list[RequestIdentity] = []  # who sent each of history's requests
        self.async_polls = async_polls
        self._tasks: dict[str, tuple[ChatRequest, int]] = {}
        self._identities: dict[str, RequestIdentity] = {}
        self.closed = False

    def enqueue(self, *items: Reply | errors.ApiError) -> None:
        with self._lock:
            self._queue.extend(items)

    def _next(self, request: ChatRequest, identity: RequestIdentity) -> Reply:
        with self._lock:
            self.history.append(request)
            self.identities.append(identity)
            item = self._queue.popleft() if self._queue else None
        if isinstance(item, errors.ApiError):
            raise item
        return item if item is not None else self.default(request)

    def complete(
        self, request: ChatRequest, on_delta: DeltaSink | None = None, *,
        identity: RequestIdentity,
    ) -> Reply:
        reply = self._next(request, identity)
        if request.mode == "stream":
            for ch in reply.content or "":
                if on_delta is not None:
                    on_delta(Delta(content=ch))
            reply = replace(reply, chunks=len(reply.content or "") + 1, ttft_ms=0.0)
        return reply

    def submit(self, request: ChatRequest, *, identity: RequestIdentity) -> TaskTicket:
        with self._lock:
            task_id = f"task-{len(self._tasks) + 1}"
            self._tasks[task_id] = (request, 0)
            self._identities[task_id] = identity
        return TaskTicket(task_id=task_id, request_id=None)

    def poll(self, ticket: TaskTicket) -> Reply | None:
        with self._lock:
            request, polls = self._tasks[ticket.task_id]
            self._tasks[ticket.task_id] = (request, polls + 1)
        if polls + 1 < self.async_polls:
            return None
        return self._next(request, self._identities[ticket.task_id])

    def close(self) -> None:
        self.closed = True


def _last_user(request: ChatRequest) -> str:
    for message in reversed(request.messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else str(content)
    return ""
