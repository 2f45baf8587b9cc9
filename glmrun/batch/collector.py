"""Collecting batch-mode requests into batch rounds: the backend conversations call, and the
collector that writes their requests as JSONL lines, submits and watches the batches, and
wakes each conversation with its answer.

The runner's own conversation logic (turns, tool rounds, expectations) runs unchanged, each
conversation in its own thread, against a `BatchBackend` whose `complete()` does not call the
API: it hands the request, with the identity of the run that sent it, to the shared
`BatchCollector` and blocks. When every live conversation is blocked on the collector (or
finished, or a quiet window passed), the collector writes the pending requests as JSONL (one
model per file, split by line count and size; each line's custom_id names its run), uploads
them, creates the batches, polls them, collects their results (`glmrun.batch.results`) and
wakes each conversation with its Reply or its error. Multi-turn conversations and tool rounds
thus advance one request per round.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from glmrun import __version__, errors
from glmrun.backends import codes
from glmrun.backends.base import DeltaSink, RequestIdentity, TaskTicket
from glmrun.backends.batch_api import BATCH_ENDPOINT, BatchApi, BatchInfo
from glmrun.backends.store import ReplyStore, reply_from_json, request_key
from glmrun.batch.options import BatchEvent, BatchOptions
from glmrun.batch.results import collect, ended_error
from glmrun.batch.state import FAILED_ENDINGS, BatchState, now_iso, open_state, state_dir
from glmrun.errors import Interrupted
from glmrun.safety.baseurl import display
from glmrun.safety.redaction import Redactor
from glmrun.types import ChatRequest, Reply

if TYPE_CHECKING:
    from glmrun.plan.plans import RunPlan

MAX_POLL_ERRORS = 5  # consecutive retryable errors on one batch's status before giving up
MAX_CUSTOM_ID = 64


class BatchBackend:
    """A Backend whose complete() waits for the request's answer from the next batch round."""

    def __init__(self, collector: BatchCollector, api: BatchApi) -> None:
        self._collector = collector
        self.api = api
        self.base_url = api.base_url

    def complete(
        self, request: ChatRequest, on_delta: DeltaSink | None = None, *,
        identity: RequestIdentity,
    ) -> Reply:
        return self._collector.ask(request, identity, self.api)

    def submit(self, request: ChatRequest, *, identity: RequestIdentity) -> TaskTicket:
        raise errors.InternalError("batch mode sends no async tasks")

    def poll(self, ticket: TaskTicket) -> Reply | None:
        raise errors.InternalError("batch mode sends no async tasks")

    def close(self) -> None:
        self.api.close()


Outcome = Reply | errors.ApiError | Interrupted


@dataclass
class _Slot:
    """One waiting conversation's answer."""

    done: threading.Event = field(default_factory=threading.Event)
    reply: Reply | None = None
    error: BaseException | None = None


@dataclass
class _Pending:
    """One distinct request waiting for a round; identical requests share it."""

    request: ChatRequest
    key: str
    occurrence: int
    custom_id: str
    api: BatchApi
    slots: list[_Slot] = field(default_factory=list)


@dataclass
class _Tracked:
    """A batch this round waits on, with the pending requests it answers (by custom_id)."""

    id: str
    api: BatchApi
    model: str
    started: float
    waiting: dict[str, _Pending]
    seen: tuple[str, int, int] = ("", -1, -1)
    errors: int = 0
    adopted: bool = False  # submitted by an earlier process: look at it right away


class BatchCollector:
    """Gathers the requests of blocked conversations and answers them through batches."""

    def __init__(
        self, *, state: BatchState, store: ReplyStore, options: BatchOptions,
        plans: Sequence[RunPlan] = (), concurrency: int = 1,
    ) -> None:
        self.state = state
        self.store = store
        self.options = options
        self._plans = {p.id: p for p in plans}
        self._concurrency = max(1, concurrency)
        self._clock = options.clock
        self._cond = threading.Condition()
        self._pending: dict[tuple[str, str, int], _Pending] = {}
        self._blocked = 0
        self._expected = 0
        self._done = 0
        self._last_news = self._clock()
        self._closing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.submitted: list[BatchInfo] = []
        self.left_waiting = 0  # conversations left waiting on a batch still running
        self.left_batches: dict[str, BatchInfo] = {}

    # -- lifecycle, fed by the runner's reporter ---------------------------------------------

    def start(self, stop: threading.Event | None = None) -> None:
        if stop is not None:
            self._stop = stop
        self._thread = threading.Thread(target=self._loop, name="glmrun-batch", daemon=True)
        self._thread.start()

    def attach(self, stop: threading.Event) -> None:
        """Follow this runner's stop event (Ctrl-C, a fatal error) from now on."""
        with self._cond:
            self._stop = stop

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)

    def expect(self, conversations: int) -> None:
        """A runner starts this many conversations (called before any of them runs)."""
        with self._cond:
            self._expected, self._done = conversations, 0
            self._cond.notify_all()

    def conversation_started(self) -> None:
        """News: a conversation starts, so the quiet window starts again."""
        with self._cond:
            self._last_news = self._clock()

    def conversation_finished(self) -> None:
        with self._cond:
            self._done += 1
            self._last_news = self._clock()
            self._cond.notify_all()

    # -- a conversation's side ---------------------------------------------------------------

    def ask(self, request: ChatRequest, identity: RequestIdentity, api: BatchApi) -> Reply:
        """The reply to `request` (sent by run `identity.run_id`): from the store if known,
        else from the next batch round."""
        plan = self._plans.get(identity.run_id)
        # A conversation never repeats a request (its history grows), so identical requests
        # come from different conversations; only repeats of one conversation need their own.
        occurrence = (plan.repeat_index if plan is not None else None) or 0
        key = request_key(request)
        known = self.known(key, occurrence)
        if known is not None:
            return known
        slot = _Slot()
        with self._cond:
            if self._stop.is_set() or self._closing:
                raise Interrupted()
            where = (display(api.base_url), key, occurrence)
            pending = self._pending.get(where)
            if pending is None:
                pending = self._pending[where] = _Pending(
                    request, key, occurrence, _custom_id(identity.run_id, key), api)
            pending.slots.append(slot)
            self._blocked += 1
            self._last_news = self._clock()
            self._cond.notify_all()
        while not slot.done.wait(0.2):
            if self._thread is not None and not self._thread.is_alive():
                raise Interrupted()
        if slot.error is not None:
            raise slot.error
        assert slot.reply is not None
        return slot.reply

    def known(self, key: str, occurrence: int) -> Reply | None:
        """A stored answer (raising it, if it was a lasting error), or None."""
        if not self.store.path(key, occurrence).is_file():
            return None
        entry = self.store.get(key, occurrence)
        if entry is None:
            return None
        stored = entry["reply"]
        if "error" in stored:
            raise codes.from_dict(stored["error"])
        return dataclasses.replace(reply_from_json(stored), cached=True)

    # -- the coordinator's side --------------------------------------------------------------

    def _ready(self) -> bool:
        live = min(self._concurrency, self._expected - self._done)
        quiet = self._clock() - self._last_news >= self.options.quiet_s
        return bool(self._pending) and (self._blocked >= live or quiet)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stop.is_set() or self._closing:
                        for pending in self._pending.values():
                            self._resolve(pending, Interrupted())
                        self._pending.clear()
                        if self._closing:
                            return
                    elif self._ready():
                        break
                    self._cond.wait(0.05)
                taken = list(self._pending.values())
                self._pending.clear()
            try:
                self._round(taken)
            except Exception as exc:  # a bug must never leave conversations waiting forever
                failure = errors.InternalError(
                    f"batch round failed: {type(exc).__name__}: {exc}")
                for pending in taken:
                    self._resolve(pending, failure)

    def _resolve(self, pending: _Pending, outcome: Outcome) -> None:
        with self._cond:
            if not pending.slots:
                return
            for slot in pending.slots:
                if isinstance(outcome, Reply):
                    slot.reply = outcome
                else:  # one exception object per thread: tracebacks attach to it
                    slot.error = copy.copy(outcome)
            self._blocked -= len(pending.slots)
            if isinstance(outcome, Interrupted):
                self._done += len(pending.slots)  # those conversations end without a transcript
            slots, pending.slots = pending.slots, []
            self._last_news = self._clock()
            self._cond.notify_all()
        for slot in slots:
            slot.done.set()

    def _emit(self, kind: str, info: BatchInfo, model: str, requests: int) -> None:
        if self.options.on_event is not None:
            self.options.on_event(BatchEvent(kind, info, model, requests))

    def _round(self, taken: list[_Pending]) -> None:
        fresh: list[_Pending] = []
        adopted: dict[str, _Tracked] = {}
        for pending in taken:
            found = self.state.lookup(display(pending.api.base_url), pending.key,
                                      pending.occurrence, self.options.report_failed)
            if found is None:
                fresh.append(pending)
                continue
            entry, custom_id = found
            if entry.get("status") in FAILED_ENDINGS:
                self._resolve(pending, ended_error(entry["id"], entry["status"],
                                                   entry.get("errors") or ()))
                continue
            tracked = adopted.setdefault(entry["id"], _Tracked(
                entry["id"], pending.api, entry.get("model", ""), self._clock(), {},
                adopted=True))
            tracked.waiting[custom_id] = pending
        batches = list(adopted.values()) + self._submit(fresh)
        if not batches:
            return
        if not self.options.wait:
            self._leave(batches)
            return
        self._watch(batches)

    def _leave(self, batches: list[_Tracked]) -> None:
        """Let the batches run on without us: their conversations end without a transcript."""
        for tracked in batches:
            info = self.left_batches.get(tracked.id) or BatchInfo(tracked.id, "running")
            self.left_batches[tracked.id] = info
            for pending in tracked.waiting.values():
                self.left_waiting += len(pending.slots)
            self._emit("left", info, tracked.model, len(tracked.waiting))
            for pending in tracked.waiting.values():
                self._resolve(pending, Interrupted())

    def _submit(self, fresh: list[_Pending]) -> list[_Tracked]:
        groups: dict[tuple[str, str], list[_Pending]] = {}
        for pending in fresh:
            groups.setdefault((pending.api.base_url, pending.request.model), []).append(pending)
        out: list[_Tracked] = []
        for (_url, model), members in groups.items():
            parts = self._split(sorted(members, key=lambda p: p.custom_id))  # stable files
            for number, part in enumerate(parts, 1):
                tracked = self._submit_part(model, part, number, len(parts))
                if tracked is not None:
                    out.append(tracked)
        return out

    def _split(self, members: list[_Pending]) -> list[list[tuple[_Pending, bytes]]]:
        """Lines for one model, cut into files within Zhipu's line and size limits."""
        limits = self.options.limits
        parts: list[list[tuple[_Pending, bytes]]] = []
        current: list[tuple[_Pending, bytes]] = []
        size = 0
        used: set[str] = set()
        for pending in members:
            custom_id = pending.custom_id
            n = 1
            while custom_id in used:
                n += 1
                custom_id = f"{pending.custom_id[: MAX_CUSTOM_ID - 4]}-{n}"
            used.add(custom_id)
            pending.custom_id = custom_id
            line = (json.dumps({
                "custom_id": custom_id, "method": "POST", "url": BATCH_ENDPOINT,
                "body": self.store.redactor.value(pending.request.body()),
            }, ensure_ascii=False) + "\n").encode("utf-8")
            if len(line) > limits.max_bytes:
                self._resolve(pending, errors.RequestTooLargeError(
                    f"the request is {len(line)} bytes: more than a batch file may hold "
                    f"({limits.max_bytes} bytes)"))
                continue
            full = len(current) >= limits.max_lines or size + len(line) > limits.max_bytes
            if current and full:
                parts.append(current)
                current, size = [], 0
            current.append((pending, line))
            size += len(line)
        if current:
            parts.append(current)
        return parts

    def _submit_part(
        self, model: str, part: list[tuple[_Pending, bytes]], number: int, of: int
    ) -> _Tracked | None:
        api = part[0][0].api
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        path = state_dir(self.state.out_dir) / "inputs" / (
            f"{stamp}-{safe_model}-{number}of{of}-{uuid.uuid4().hex[:8]}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(line for _p, line in part))
        try:
            file_id = api.upload_batch_file(path)
            info = api.create_batch(file_id, {
                "source": "glmrun", "glmrun_version": __version__, "model": model[:512],
                "part": f"{number}/{of}",
            })
        except errors.ApiError as exc:
            path.unlink(missing_ok=True)
            for pending, _line in part:
                self._resolve(pending, exc)
            return None
        self.state.add({
            "id": info.id, "base_url": display(api.base_url), "model": model, "status": info.status,
            "input_file_id": file_id, "output_file_id": None, "error_file_id": None,
            "counts": {"total": len(part), "completed": 0, "failed": 0}, "errors": [],
            "submitted_at": now_iso(), "updated_at": now_iso(), "collected": False,
            "input": path.relative_to(self.state.out_dir).as_posix(),
            "lines": {p.custom_id: [p.key, p.occurrence] for p, _line in part},
        })
        self.submitted.append(info)
        self._emit("submitted", info, model, len(part))
        return _Tracked(info.id, api, model, self._clock(), {p.custom_id: p for p, _l in part})

    def _sleep(self, seconds: float) -> bool:
        """Wait; False when the run is stopping."""
        if self.options.sleep is not None:
            self.options.sleep(seconds)
        else:
            self._stop.wait(seconds)
        return not (self._stop.is_set() or self._closing)

    def _watch(self, batches: list[_Tracked]) -> None:
        """Poll the batches until each has ended, and answer their requests."""
        policy = self.options.poll
        live = list(batches)
        started = self._clock()
        polls = 0
        while live:
            now = polls == 0 and any(t.adopted for t in live)
            if not self._sleep(0.0 if now else policy.interval(polls)):
                self._leave(live)
                return
            polls += 1
            for tracked in list(live):
                try:
                    info = tracked.api.get_batch(tracked.id)
                except errors.ApiError as exc:
                    tracked.errors += 1
                    if exc.retryable and tracked.errors <= MAX_POLL_ERRORS:
                        continue
                    for pending in tracked.waiting.values():
                        self._resolve(pending, exc)
                    live.remove(tracked)
                    continue
                tracked.errors = 0
                seen = (info.status, info.completed, info.failed)
                if seen != tracked.seen:
                    tracked.seen = seen
                    self.state.update(info)
                    self._emit("ended" if info.terminal else "progress", info, tracked.model,
                               len(tracked.waiting))
                if info.terminal:
                    live.remove(tracked)
                    latency = (self._clock() - tracked.started) * 1000
                    requests = {cid: p.request for cid, p in tracked.waiting.items()}
                    outcomes = collect(self.state, self.store, info, tracked.api, requests=requests,
                                            latency_ms=latency, polls=polls)
                    for custom_id, pending in tracked.waiting.items():
                        self._resolve(pending, outcomes.get(custom_id) or errors.InternalError(
                            f"batch {info.id} has no entry for {custom_id}"))
            if live and policy.timeout_s is not None and \
                    self._clock() - started >= policy.timeout_s:
                for tracked in live:
                    for pending in tracked.waiting.values():
                        self._resolve(pending, errors.BatchTimeoutError(
                            f"batch {tracked.id} did not end within {policy.timeout_s:g} s; "
                            f"collect it later with: glmrun batch fetch {tracked.id}"))
                return

    # -- results ---------------------------------------------------------------------------


def _custom_id(plan_id: str, key: str) -> str:
    """`<plan id>--<request key[:16]>`, shortened (keeping it unique) to at most 64 chars."""
    plain = f"{plan_id}--{key[:16]}"
    if len(plain) <= MAX_CUSTOM_ID:
        return plain
    import hashlib

    tag = hashlib.sha256(plan_id.encode("utf-8")).hexdigest()[:8]
    return f"{plan_id[: MAX_CUSTOM_ID - 27]}~{tag}--{key[:16]}"


def open_collector(
    out_dir: Path, options: BatchOptions, plans: Sequence[RunPlan] = (), concurrency: int = 1,
    redactor: Redactor | None = None,
) -> BatchCollector:
    state, store = open_state(out_dir, redactor)
    return BatchCollector(state=state, store=store, options=options, plans=plans,
                          concurrency=concurrency)
