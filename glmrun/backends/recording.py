"""Record, replay and cache model calls: Backend wrappers over a `ReplyStore` folder.

`--record DIR` wraps the real backend in `RecordingBackend`, `--replay DIR` swaps it for
`ReplayBackend` (no network, no key), `--cache DIR` wraps it in `CachingBackend` (replay what
is recorded, call and record the rest). The store holds request bodies and replies only —
never the API key, which is not part of a `ChatRequest`.

Repeats: the n-th identical request of a run gets the n-th recording, so repeated samples keep
their different answers. With -j > 1 identical requests in flight at once may swap recordings
with each other; they are interchangeable samples of the same request.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from glmrun import errors
from glmrun.backends.base import Backend, DeltaSink, RequestIdentity, TaskTicket
from glmrun.backends.store import ReplyStore, reply_from_json, reply_to_json, request_key
from glmrun.safety.redaction import Redactor
from glmrun.types import ChatRequest, Delta, Reply

Wrap = Callable[[Backend], Backend]
PREVIEW_CHARS = 60


def record_wrap(store: ReplyStore) -> Wrap:
    """A `BackendSettings.wrap` recording every reply into `store`."""
    return lambda inner: RecordingBackend(inner, store)


def replay_wrap(store: ReplyStore) -> Wrap:
    """A `BackendSettings.wrap` answering from `store` only; the real backend is closed unused."""

    def wrap(inner: Backend) -> Backend:
        inner.close()
        return ReplayBackend(store)

    return wrap


def cache_wrap(store: ReplyStore) -> Wrap:
    """A `BackendSettings.wrap` replaying recorded requests and recording the others."""
    return lambda inner: CachingBackend(inner, store)


def store_wrap(
    *, record: Path | None = None, replay: Path | None = None, cache: Path | None = None,
    redactor: Redactor | None = None,
) -> Wrap | None:
    """The wrap for at most one of --record / --replay / --cache (None when none is given);
    what it stores goes through `redactor`."""
    chosen = [(name, root) for name, root in
              (("--record", record), ("--replay", replay), ("--cache", cache)) if root is not None]
    if len(chosen) > 1:
        raise errors.InputError(
            f"{' and '.join(name for name, _ in chosen)} cannot be combined: choose one"
        )
    if record is not None:
        return record_wrap(ReplyStore(record, redactor))
    if replay is not None:
        return replay_wrap(ReplyStore(replay, redactor))
    if cache is not None:
        return cache_wrap(ReplyStore(cache, redactor))
    return None


class RecordingBackend:
    """Passes every call through to `inner` and stores each successful reply."""

    def __init__(self, inner: Backend, store: ReplyStore) -> None:
        self.inner = inner
        self.store = store
        self._lock = threading.Lock()
        self._tasks: dict[str, ChatRequest] = {}

    @property
    def base_url(self) -> str | None:
        return getattr(self.inner, "base_url", None)

    def complete(
        self, request: ChatRequest, on_delta: DeltaSink | None = None, *,
        identity: RequestIdentity,
    ) -> Reply:
        deltas: list[dict[str, str]] = []
        capture = _capturing(deltas, on_delta)

        if request.mode == "stream":
            reply = self.inner.complete(request, capture, identity=identity)
            self._put(request, reply, deltas)
        else:
            reply = self.inner.complete(request, on_delta, identity=identity)
            self._put(request, reply, None)
        return reply

    def submit(self, request: ChatRequest, *, identity: RequestIdentity) -> TaskTicket:
        ticket = self.inner.submit(request, identity=identity)
        with self._lock:
            self._tasks[ticket.task_id] = request
        return ticket

    def poll(self, ticket: TaskTicket) -> Reply | None:
        try:
            reply = self.inner.poll(ticket)
        except errors.TaskFailedError:
            with self._lock:
                self._tasks.pop(ticket.task_id, None)
            raise
        if reply is not None:
            with self._lock:
                request = self._tasks.pop(ticket.task_id)
            # The runner adds the task id after poll; keep it so a replay shows the same one.
            self._put(request, dataclasses.replace(
                reply, task_id=reply.task_id or ticket.task_id,
                request_id=reply.request_id or ticket.request_id,
            ), None)
        return reply

    def close(self) -> None:
        self.inner.close()

    def _put(self, request: ChatRequest, reply: Reply, deltas: list[dict[str, str]] | None) -> None:
        key = request_key(request)
        self.store.put(key, self.store.next_occurrence(key), request,
                       reply_to_json(reply, deltas=deltas))


class ReplayBackend:
    """Answers only from the store: no network, no key; an unrecorded request is an error.

    Replies keep what was recorded (content, usage, finish_reason, tool calls, ids) and are
    marked `cached`; latency and time to first token are the replay's own.
    """

    def __init__(self, store: ReplyStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._tasks: dict[str, Reply] = {}

    def complete(
        self, request: ChatRequest, on_delta: DeltaSink | None = None, *,
        identity: RequestIdentity,
    ) -> Reply:
        started = self._clock()
        key = request_key(request)
        return _replay(self._entry(request, key, self.store.next_occurrence(key)), request,
                       on_delta, started, self._clock)

    def submit(self, request: ChatRequest, *, identity: RequestIdentity) -> TaskTicket:
        key = request_key(request)
        occurrence = self.store.next_occurrence(key)
        reply = reply_from_json(self._entry(request, key, occurrence)["reply"])
        return self._ticket(reply, f"replay-{key[:16]}-{occurrence}")

    def poll(self, ticket: TaskTicket) -> Reply | None:
        with self._lock:
            reply = self._tasks.pop(ticket.task_id)
        return dataclasses.replace(reply, latency_ms=0.0, cached=True)

    def close(self) -> None:
        pass

    def _ticket(self, reply: Reply, fallback_id: str) -> TaskTicket:
        task_id = reply.task_id or fallback_id
        with self._lock:
            self._tasks[task_id] = reply
        return TaskTicket(task_id=task_id, request_id=reply.request_id)

    def _entry(self, request: ChatRequest, key: str, occurrence: int) -> Mapping[str, Any]:
        entry = self.store.get(key, occurrence)
        if entry is None:
            raise errors.ReplayMissError(miss_message(request, key, self.store.root))
        return entry


class CachingBackend:
    """Replays requests recorded in the store (marked `cached`), calls and records the rest."""

    def __init__(
        self, inner: Backend, store: ReplyStore, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.inner = inner
        self.store = store
        self._clock = clock
        self._slots = _Occurrences()
        self._replay = ReplayBackend(store, clock=clock)
        self._lock = threading.Lock()
        self._live: dict[str, tuple[ChatRequest, str, int]] = {}

    @property
    def base_url(self) -> str | None:
        return getattr(self.inner, "base_url", None)

    def complete(
        self, request: ChatRequest, on_delta: DeltaSink | None = None, *,
        identity: RequestIdentity,
    ) -> Reply:
        started = self._clock()
        key = request_key(request)
        occurrence = self._slots.claim(key)
        entry = self._recorded(key, occurrence)
        if entry is not None:
            return _replay(entry, request, on_delta, started, self._clock)
        deltas: list[dict[str, str]] = []
        capture = _capturing(deltas, on_delta)

        try:
            reply = self.inner.complete(request, capture if request.mode == "stream" else on_delta,
                                       identity=identity)
        except BaseException:
            self._slots.release(key, occurrence)  # a retry takes the same slot
            raise
        self.store.put(key, occurrence, request,
                       reply_to_json(reply, deltas=deltas if request.mode == "stream" else None))
        return reply

    def submit(self, request: ChatRequest, *, identity: RequestIdentity) -> TaskTicket:
        key = request_key(request)
        occurrence = self._slots.claim(key)
        entry = self._recorded(key, occurrence)
        if entry is not None:
            return self._replay._ticket(reply_from_json(entry["reply"]),
                                        f"cache-{key[:16]}-{occurrence}")
        try:
            ticket = self.inner.submit(request, identity=identity)
        except BaseException:
            self._slots.release(key, occurrence)
            raise
        with self._lock:
            self._live[ticket.task_id] = (request, key, occurrence)
        return ticket

    def poll(self, ticket: TaskTicket) -> Reply | None:
        with self._lock:
            live = self._live.get(ticket.task_id)
        if live is None:
            return self._replay.poll(ticket)
        request, key, occurrence = live
        try:
            reply = self.inner.poll(ticket)
        except errors.TaskFailedError:
            with self._lock:
                self._live.pop(ticket.task_id, None)
            self._slots.release(key, occurrence)
            raise
        if reply is not None:
            with self._lock:
                self._live.pop(ticket.task_id, None)
            self.store.put(key, occurrence, request, reply_to_json(dataclasses.replace(
                reply, task_id=reply.task_id or ticket.task_id,
                request_id=reply.request_id or ticket.request_id,
            )))
        return reply

    def close(self) -> None:
        self.inner.close()

    def _recorded(self, key: str, occurrence: int) -> Mapping[str, Any] | None:
        # Exactly this occurrence: a repeat beyond what was recorded calls the API for a new
        # sample instead of reusing the first one.
        if not self.store.path(key, occurrence).is_file():
            return None
        return self.store.get(key, occurrence)


class _Occurrences:
    """Which recording slot each identical request takes; a failed call gives its slot back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: dict[str, set[int]] = {}

    def claim(self, key: str) -> int:
        with self._lock:
            taken = self._taken.setdefault(key, set())
            n = next(i for i in range(len(taken) + 1) if i not in taken)
            taken.add(n)
            return n

    def release(self, key: str, occurrence: int) -> None:
        with self._lock:
            self._taken.get(key, set()).discard(occurrence)


def _replay(
    entry: Mapping[str, Any],
    request: ChatRequest,
    on_delta: DeltaSink | None,
    started: float,
    clock: Callable[[], float],
) -> Reply:
    """The stored reply, its stream re-played delta by delta, with the replay's own timing."""
    data = entry["reply"]
    reply = reply_from_json(data)
    ttft: float | None = None
    if request.mode == "stream":
        deltas = data.get("deltas")
        if deltas is None:  # stored without its pieces: one delta holding the whole reply
            deltas = [{"content": reply.content or "",
                       "reasoning_content": reply.reasoning_content or ""}]
        for piece in deltas:
            if ttft is None:
                ttft = (clock() - started) * 1000
            if on_delta is not None:
                on_delta(Delta(content=piece.get("content") or "",
                               reasoning_content=piece.get("reasoning_content") or ""))
        ttft = ttft if ttft is not None else (clock() - started) * 1000
    return dataclasses.replace(
        reply,
        latency_ms=(clock() - started) * 1000,
        ttft_ms=ttft,
        chunk_offsets_ms=None,
        cached=True,
    )


def miss_message(request: ChatRequest, key: str, root: Path) -> str:
    """Why a replay failed, naming what a person needs to find the request and fix it."""
    last_user = ""
    for message in reversed(request.messages):
        if message.get("role") == "user":
            content = message.get("content")
            last_user = content if isinstance(content, str) else str(content)
            break
    last_user = " ".join(last_user.split())
    if len(last_user) > PREVIEW_CHARS:
        last_user = last_user[: PREVIEW_CHARS - 1] + "…"
    return (
        f"no recording in {root} for this {request.mode} request to {request.model} "
        f"(last user message {last_user!r}; key {key}); "
        f"re-record with --record {root}"
    )


def _capturing(deltas: list[dict[str, str]], on_delta: DeltaSink | None) -> DeltaSink:
    """A delta sink that keeps every streamed piece (to store it) and passes it on."""

    def capture(delta: Delta) -> None:
        deltas.append({"content": delta.content, "reasoning_content": delta.reasoning_content})
        if on_delta is not None:
            on_delta(delta)

    return capture
