"""Batch mode: conversations answered through Zhipu's Batch API, one request per batch round.

The runner's own conversation logic (turns, tool rounds, expectations) runs unchanged, each
conversation in its own thread, against a `BatchBackend` whose `complete()` does not call the
API: it hands the request to the shared `BatchCollector` and blocks. When every live
conversation is blocked on the collector (or finished, or a quiet window passed), the collector
writes the pending requests as JSONL (one model per file, split by line count and size),
uploads them, creates the batches, polls them, downloads the output and error files, and wakes
each conversation with its Reply or its error. Multi-turn conversations and tool rounds thus
advance one request per round.

Everything a round learns lands on disk under `<out>/.glmrun-batch/`: `replies/` (a ReplyStore
keyed by `request_key`, so a re-run answers known requests without a new batch) and
`state.json` (the batches with their custom_id → request map, and the selection that made them,
so `glmrun batch fetch` can collect a batch after the CLI stopped and resume the run).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glmrun import __version__, errors
from glmrun.backends.base import Backend, DeltaSink, TaskTicket
from glmrun.backends.batch_api import BATCH_ENDPOINT, BatchApi, BatchInfo
from glmrun.backends.store import ReplyStore, reply_from_json, reply_to_json, request_key
from glmrun.output.summary import RunRow, Tally, add_costs
from glmrun.run.limits import AdaptiveLimiter
from glmrun.run.options import NullReporter, Reporter, RunOptions
from glmrun.run.runner import Interrupted, Runner
from glmrun.safety.atomic import write_json_atomically
from glmrun.safety.baseurl import display
from glmrun.safety.redaction import Redactor, env_keys
from glmrun.types import ChatRequest, Delta, Reply

if TYPE_CHECKING:
    from glmrun.output.summary import RunSummary
    from glmrun.plan.plans import RunPlan

Sleep = Callable[[float], None]
Clock = Callable[[], float]

STATE_DIR = ".glmrun-batch"
STATE_VERSION = 1
FAILED_ENDINGS = frozenset({"failed", "expired", "cancelled"})
MAX_POLL_ERRORS = 5  # consecutive retryable errors on one batch's status before giving up
MAX_CUSTOM_ID = 64


_ENDED: Mapping[str, type[errors.BatchEndedError]] = {
    "expired": errors.BatchExpiredError, "failed": errors.BatchFailedError,
    "cancelled": errors.BatchCancelledError,
}


def ended_error(
    batch_id: str, status: str, details: Iterable[str] = ()
) -> errors.BatchEndedError:
    """The error for a request whose batch ended `status` without answering it."""
    why = "; ".join(details)
    cls = _ENDED.get(status, errors.BatchEndedError)
    return cls(f"batch {batch_id} {status} without answering this request" + (
        f": {why}" if why else ""))


# -- options ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchPollPolicy:
    """How a running batch is watched: a growing interval and an optional overall timeout."""

    start_s: float = 5.0
    factor: float = 1.5
    ceiling_s: float = 60.0
    timeout_s: float | None = None  # None: until the batch ends (Zhipu's window is 24 h)

    def interval(self, poll: int) -> float:
        return float(min(self.ceiling_s, self.start_s * self.factor**poll))


@dataclass(frozen=True)
class BatchLimits:
    """Zhipu's limits per input file, and how many conversations run at once (one thread each)."""

    max_lines: int = 50_000
    max_bytes: int = 100 * 1000 * 1000
    wave: int = 2_000


@dataclass(frozen=True)
class BatchEvent:
    """Something the user may want to see: a batch submitted, progressing, ended, or left
    running on Zhipu's side (--no-wait, or the run was stopped)."""

    kind: str  # submitted | progress | ended | left
    batch: BatchInfo
    model: str
    requests: int


@dataclass(frozen=True)
class BatchOptions:
    """How batch mode runs; `selection` is saved so `glmrun batch fetch` can resume the run."""

    selection: Mapping[str, Any] | None = None  # api.Selection.saved()
    poll: BatchPollPolicy = field(default_factory=BatchPollPolicy)
    limits: BatchLimits = field(default_factory=BatchLimits)
    wait: bool = True  # False (--no-wait): submit, save the state and leave the batches running
    quiet_s: float = 2.0  # flush pending requests after this long without news from any thread
    report_failed: frozenset[str] = frozenset()  # ended batches whose failure is the answer
    on_event: Callable[[BatchEvent], None] | None = None
    sleep: Sleep | None = None  # default: waits that a stop (Ctrl-C) cuts short
    clock: Clock = time.monotonic


def counts_text(info: BatchInfo) -> str:
    return f"{info.completed}/{info.total} done" + (f", {info.failed} failed" if info.failed
                                                     else "")


def describe(event: BatchEvent) -> str:
    """One line for the user about a batch event."""
    b = event.batch
    if event.kind == "submitted":
        return f"batch {b.id}: submitted {event.requests} requests ({event.model})"
    if event.kind == "left":
        return f"batch {b.id}: left running on the server ({event.requests} requests)"
    return f"batch {b.id}: {b.status} ({counts_text(b)})"


# -- state -----------------------------------------------------------------------------


def state_dir(out_dir: Path) -> Path:
    return out_dir / STATE_DIR


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class BatchState:
    """`<out>/.glmrun-batch/state.json`: this folder's batches and the run that made them.

    Each batch entry holds its id, base URL, model, last known status and counts, the input file
    kept until its results are collected, and `lines`: custom_id → [request key, occurrence].
    Saved atomically after every change; thread-safe.
    """

    def __init__(self, out_dir: Path, data: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.path = state_dir(out_dir) / "state.json"
        self._data = data
        self._lock = threading.RLock()
        self._index: dict[tuple[str, str, int], tuple[dict[str, Any], str]] | None = None
        self._index_failed: frozenset[str] = frozenset()
        self.redactor = Redactor(env_keys())  # what is saved; open_collector sets the run's

    @classmethod
    def load(cls, out_dir: Path) -> BatchState:
        path = state_dir(out_dir) / "state.json"
        if not path.is_file():
            return cls(out_dir, {"state_version": STATE_VERSION, "run": None, "batches": []})
        try:
            with path.open(encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise errors.InputError(f"{path}: not a readable batch state file: {exc}") from exc
        if not isinstance(data, dict) or data.get("state_version") != STATE_VERSION:
            raise errors.InputError(f"{path}: unknown batch state version")
        return cls(out_dir, data)

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @property
    def run(self) -> Mapping[str, Any] | None:
        """The saved selection and output settings: {selection: {...}, formats: [...]}."""
        run: Mapping[str, Any] | None = self._data.get("run")
        return run

    def set_run(self, run: Mapping[str, Any] | None) -> None:
        with self._lock:
            if run is not None or self._data.get("run") is None:
                self._data["run"] = dict(run) if run is not None else None

    def batches(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(b) for b in self._data["batches"]]

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        with self._lock:
            for entry in self._data["batches"]:
                if entry["id"] == batch_id:
                    return dict(entry)
        return None

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._data["batches"].append(entry)
            self._index = None
            self.save()

    def update(self, info: BatchInfo, *, collected: bool | None = None) -> None:
        with self._lock:
            for entry in self._data["batches"]:
                if entry["id"] == info.id:
                    entry.update(
                        status=info.status, output_file_id=info.output_file_id,
                        error_file_id=info.error_file_id,
                        counts={"total": info.total, "completed": info.completed,
                                "failed": info.failed},
                        errors=list(info.errors), updated_at=_now_iso(),
                    )
                    if collected is not None:
                        entry["collected"] = collected
            self._index = None
            self.save()

    def lookup(
        self, base_url: str, key: str, occurrence: int, report_failed: frozenset[str]
    ) -> tuple[dict[str, Any], str] | None:
        """The batch (and custom_id) that holds this request and may still answer it: one not
        collected yet, or an ended one whose failure is to be reported. Newest wins, and a live
        batch wins over a failed one."""
        with self._lock:
            if self._index is None or self._index_failed != report_failed:
                index: dict[tuple[str, str, int], tuple[dict[str, Any], str]] = {}
                for entry in self._data["batches"]:
                    failed = entry.get("status") in FAILED_ENDINGS
                    if failed and entry["id"] not in report_failed:
                        continue
                    if entry.get("collected") and not failed:
                        continue
                    for custom_id, (k, occ) in entry["lines"].items():
                        slot = (entry["base_url"], k, int(occ))
                        held = index.get(slot)
                        if held is None or not failed or held[0].get("status") in FAILED_ENDINGS:
                            index[slot] = (entry, custom_id)
                self._index, self._index_failed = index, report_failed
            found = self._index.get((base_url, key, occurrence))
            return (dict(found[0]), found[1]) if found else None

    def save(self) -> None:
        with self._lock:
            self._data["glmrun_version"] = __version__
            self._data["updated_at"] = _now_iso()
            write_json_atomically(self.path, self.redactor.value(self._data))


# -- the backend and the collector -----------------------------------------------------


class BatchBackend:
    """A Backend whose complete() waits for the request's answer from the next batch round."""

    def __init__(self, collector: BatchCollector, api: BatchApi) -> None:
        self._collector = collector
        self.api = api
        self.base_url = api.base_url

    def complete(self, request: ChatRequest, on_delta: DeltaSink | None = None) -> Reply:
        return self._collector.ask(request, self.api)

    def submit(self, request: ChatRequest) -> TaskTicket:
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
        self._local = threading.local()
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

    def conversation_started(self, plan_id: str) -> None:
        self._local.plan_id = plan_id
        with self._cond:
            self._last_news = self._clock()

    def conversation_finished(self) -> None:
        with self._cond:
            self._done += 1
            self._last_news = self._clock()
            self._cond.notify_all()

    # -- a conversation's side ---------------------------------------------------------------

    def ask(self, request: ChatRequest, api: BatchApi) -> Reply:
        """The reply to `request`: from the store if known, else from the next batch round."""
        plan_id: str | None = getattr(self._local, "plan_id", None)
        plan = self._plans.get(plan_id) if plan_id is not None else None
        # A conversation never repeats a request (its history grows), so identical requests
        # come from different conversations; only repeats of one conversation need their own.
        occurrence = int(getattr(plan, "repeat_index", None) or 0)
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
                    request, key, occurrence, _custom_id(plan_id or "request", key), api)
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
            raise errors.from_dict(stored["error"])
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
            "submitted_at": _now_iso(), "updated_at": _now_iso(), "collected": False,
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
                    outcomes = self.collect(info, tracked.api, requests=requests,
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

    def collect(
        self, info: BatchInfo, api: BatchApi, *, requests: Mapping[str, ChatRequest] | None = None,
        latency_ms: float = 0.0, polls: int | None = None,
    ) -> dict[str, Reply | errors.ApiError]:
        """Download an ended batch's results into the store; the outcome per custom_id.

        Lasting answers (replies, non-retryable errors of single lines) are stored; a batch
        that failed, expired or was cancelled answers its remaining lines with that error.
        """
        entry = self.state.batch(info.id)
        if entry is None:
            raise errors.InputError(f"batch {info.id} is not one of this folder's batches")
        results: dict[str, Reply | errors.ApiError] = {}
        try:
            for file_id in (info.output_file_id, info.error_file_id):
                if file_id:
                    results.update(_parse_results(
                        api.download_file(file_id), api, info, latency_ms, polls))
        except errors.ApiError as exc:
            return {custom_id: exc for custom_id in entry["lines"]}
        inputs: dict[str, ChatRequest] | None = None
        out: dict[str, Reply | errors.ApiError] = {}
        for custom_id, (key, occurrence) in entry["lines"].items():
            outcome = results.get(custom_id)
            if outcome is None:
                outcome = (
                    ended_error(info.id, info.status, info.errors)
                    if info.status != "completed"
                    else errors.BatchEndedError(f"batch {info.id} has no result for {custom_id}")
                )
            elif isinstance(outcome, Reply) or not (outcome.retryable or outcome.fatal):
                request = (requests or {}).get(custom_id)
                if request is None:
                    inputs = inputs if inputs is not None else self._inputs(entry)
                    request = inputs.get(custom_id)
                if request is not None:
                    stored = reply_to_json(outcome) if isinstance(outcome, Reply) else {
                        "error": outcome.to_dict()}
                    self.store.put(key, int(occurrence), request, stored)
            out[custom_id] = outcome
        self.state.update(info, collected=True)
        if info.status == "completed" and entry.get("input"):
            (self.state.out_dir / entry["input"]).unlink(missing_ok=True)
        return out

    def _inputs(self, entry: Mapping[str, Any]) -> dict[str, ChatRequest]:
        """The requests of a batch submitted by an earlier process, from its saved input file."""
        path = self.state.out_dir / str(entry.get("input") or "")
        found: dict[str, ChatRequest] = {}
        if not entry.get("input") or not path.is_file():
            return found
        with path.open(encoding="utf-8") as fh:
            for raw in fh:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    line = json.loads(raw)
                    body = dict(line["body"])
                    model = body.pop("model")
                    messages = tuple(body.pop("messages"))
                    found[line["custom_id"]] = ChatRequest(model, messages, body, "sync")
        return found


def _custom_id(plan_id: str, key: str) -> str:
    """`<plan id>--<request key[:16]>`, shortened (keeping it unique) to at most 64 chars."""
    plain = f"{plan_id}--{key[:16]}"
    if len(plain) <= MAX_CUSTOM_ID:
        return plain
    import hashlib

    tag = hashlib.sha256(plan_id.encode("utf-8")).hexdigest()[:8]
    return f"{plan_id[: MAX_CUSTOM_ID - 27]}~{tag}--{key[:16]}"


def _parse_results(
    content: bytes, api: BatchApi, info: BatchInfo, latency_ms: float, polls: int | None
) -> dict[str, Reply | errors.ApiError]:
    """Output- or error-file lines → the outcome per custom_id."""
    out: dict[str, Reply | errors.ApiError] = {}
    for raw in content.decode("utf-8", errors="replace").splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(line, Mapping) or not isinstance(line.get("custom_id"), str):
            continue
        out[line["custom_id"]] = _line_outcome(line, api, info, latency_ms, polls)
    return out


def _line_outcome(
    line: Mapping[str, Any], api: BatchApi, info: BatchInfo, latency_ms: float, polls: int | None
) -> Reply | errors.ApiError:
    custom_id = str(line["custom_id"])
    response = line.get("response")
    response = response if isinstance(response, Mapping) else {}
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, Mapping):
        try:
            reply = api.reply_from_body(body, latency_ms=latency_ms)
        except errors.ApiError as exc:
            return exc.where(note=f" [batch {info.id}, {custom_id}]")
        return dataclasses.replace(
            reply, id=custom_id, task_id=info.id,
            request_id=reply.request_id or response.get("request_id"),
            polls=polls, queue_ms=round(latency_ms, 3),
        )
    err: Any = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(err, Mapping):
        err = line.get("error")
        err = err if isinstance(err, Mapping) else {}
    code = str(err["code"]) if err.get("code") is not None else None
    message = str(err.get("message") or f"HTTP {status}")
    return errors.classify(
        status if isinstance(status, int) else None, code,
        f"{message} [batch {info.id}, {custom_id}]",
    )


# -- running ---------------------------------------------------------------------------


class _Forward:
    """A Reporter that passes everything on to another."""

    def __init__(self, inner: Reporter) -> None:
        self._inner = inner

    def started(self, total: int, skipped: int) -> None:
        self._inner.started(total, skipped)

    def conversation_started(self, plan_id: str) -> None:
        self._inner.conversation_started(plan_id)

    def delta(self, plan_id: str, delta: Delta, *, turn: int, round_: int) -> None:
        self._inner.delta(plan_id, delta, turn=turn, round_=round_)

    def retrying(self, plan_id: str, error: errors.ApiError, wait_s: float) -> None:
        self._inner.retrying(plan_id, error, wait_s)

    def conversation_finished(self, row: RunRow, transcript: Mapping[str, Any]) -> None:
        self._inner.conversation_finished(row, transcript)

    def status(self, in_flight: int, concurrency: int) -> None:
        self._inner.status(in_flight, concurrency)

    def finished(self, summary: RunSummary) -> None:
        self._inner.finished(summary)


class _Tracking(_Forward):
    """Also tells the collector how many conversations run, and which one runs in each thread."""

    def __init__(self, inner: Reporter, collector: BatchCollector) -> None:
        super().__init__(inner)
        self._collector = collector

    def started(self, total: int, skipped: int) -> None:
        self._collector.expect(total - skipped)
        super().started(total, skipped)

    def conversation_started(self, plan_id: str) -> None:
        self._collector.conversation_started(plan_id)
        super().conversation_started(plan_id)

    def conversation_finished(self, row: RunRow, transcript: Mapping[str, Any]) -> None:
        self._collector.conversation_finished()
        super().conversation_finished(row, transcript)


class _HoldSummary(_Forward):
    """Keeps back `finished`: a mixed run reports one summary for both of its parts."""

    def finished(self, summary: RunSummary) -> None:
        pass


def run_state(
    selection: Mapping[str, Any] | None, formats: Sequence[str], base_url: str | None
) -> dict[str, Any] | None:
    """What state.json keeps of a run so that `glmrun batch fetch` can resume it."""
    if selection is None:
        return None
    return {"base_url": display(base_url) if base_url else None, "selection": dict(selection),
            "formats": list(formats)}


def open_collector(
    out_dir: Path, options: BatchOptions, plans: Sequence[RunPlan] = (), concurrency: int = 1,
    redactor: Redactor | None = None,
) -> BatchCollector:
    state = BatchState.load(out_dir)
    if redactor is not None:
        state.redactor = redactor
    store = ReplyStore(state_dir(out_dir) / "replies", state.redactor)
    return BatchCollector(state=state, store=store, options=options, plans=plans,
                          concurrency=concurrency)


def as_batch_api(backend: Backend) -> BatchApi:
    if not isinstance(backend, BatchApi):
        raise errors.InputError(
            "batch mode needs the Zhipu backend directly (it cannot be combined with "
            "--record / --replay / --cache)"
        )
    return backend


def run_batch(
    plans: Sequence[RunPlan],
    backend_for: Callable[[str | None], Backend],
    options: RunOptions,
    reporter: Reporter | None,
    batch: BatchOptions,
    *,
    on_runner: Callable[[Any], None] | None = None,
) -> RunSummary:
    """Run batch-mode plans to the end (or leave their batches running with `wait=False`).

    At most `limits.wave` conversations run at once. A waiting run refills one runner's threads
    as conversations end; with `wait=False` each wave gets its own runner, because a
    conversation left waiting on a batch ends mid-call and its runner never gets that request
    slot back.
    """
    wave = max(1, batch.limits.wave)
    collector = open_collector(options.out_dir, batch, plans, min(wave, len(plans)),
                               Redactor(options.secrets))
    collector.state.set_run(run_state(batch.selection, options.formats, options.base_url))
    collector.state.save()
    inner = reporter or NullReporter()
    waves = [list(plans)] if batch.wait else [
        list(plans[i : i + wave]) for i in range(0, len(plans), wave)]
    summaries: list[RunSummary] = []
    collector.start()
    try:
        for members in waves:
            summary = _run_wave(members, backend_for, options, _HoldSummary(inner), collector,
                                on_runner)
            summaries.append(summary)
            if summary.interrupted or summary.fatal is not None:
                break
    finally:
        collector.close()
    merged = summaries[0]
    for more in summaries[1:]:
        merged = merge_summaries(merged, more)
    unplanned = len(plans) - merged.total
    merged.total += unplanned
    merged.not_started += unplanned
    if not merged.interrupted:  # left on purpose (--no-wait): not "could not complete"
        merged.not_started = max(0, merged.not_started - collector.left_waiting)
    inner.finished(merged)
    return merged


def _run_wave(
    plans: Sequence[RunPlan],
    backend_for: Callable[[str | None], Backend],
    options: RunOptions,
    reporter: Reporter,
    collector: BatchCollector,
    on_runner: Callable[[Any], None] | None,
) -> RunSummary:
    def factory(url: str | None) -> Backend:
        return BatchBackend(collector, as_batch_api(backend_for(url)))

    concurrency = max(1, min(collector.options.limits.wave, len(plans)))
    run_options = dataclasses.replace(options, concurrency=concurrency, rpm=None, tpm=None)
    runner = Runner(factory, run_options, _Tracking(reporter, collector))
    # Every conversation holds its request slot while it waits for a round: a gate that
    # narrows on a rate-limited line would leave conversations outside every round.
    runner.limiter = AdaptiveLimiter(concurrency, floor=concurrency)
    try:
        for url in {options.base_url or p.spec.base_url for p in plans}:
            runner.backend(url)  # bad settings fail here, not inside a worker thread
        collector.attach(runner.stop)
        if on_runner is not None:
            on_runner(runner)
        return runner.run(plans)
    finally:
        runner.close()


def run_mixed(
    plans: Sequence[RunPlan],
    backend_for: Callable[[str | None], Backend],
    options: RunOptions,
    reporter: Reporter | None,
    batch: BatchOptions,
    *,
    on_runner: Callable[[Any], None] | None = None,
) -> RunSummary:
    """Run a selection holding batch-mode plans: the others first (as usual), then the batch
    ones; one summary for both."""
    batched = [p for p in plans if p.mode == "batch"]
    others = [p for p in plans if p.mode != "batch"]
    if not others:
        return run_batch(batched, backend_for, options, reporter, batch, on_runner=on_runner)
    inner = reporter or NullReporter()
    held = _HoldSummary(inner)
    runner = Runner(backend_for, options, held)
    if on_runner is not None:
        on_runner(runner)
    try:
        first = runner.run(others)
    finally:
        runner.close()
    if first.interrupted or first.fatal is not None:
        first.not_started += len(batched)
        first.total += len(batched)
        first.conversations += len({p.conversation for p in batched})
        inner.finished(first)
        return first
    second = run_batch(batched, backend_for, options, held, batch, on_runner=on_runner)
    merged = merge_summaries(first, second)
    inner.finished(merged)
    return merged


def merge_summaries(a: RunSummary, b: RunSummary) -> RunSummary:
    """One summary for two runs made one after the other."""
    return dataclasses.replace(
        a, total=a.total + b.total, skipped=a.skipped + b.skipped,
        conversations=a.conversations + b.conversations,
        rows=sorted(a.rows + b.rows, key=lambda r: r.id),
        passed_ids=sorted(a.passed_ids + b.passed_ids), tokens=a.tokens + b.tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        cost=add_costs(a.cost, b.cost), unpriced=a.unpriced + b.unpriced,
        tallies={k: a.tallies.get(k, Tally()) + b.tallies.get(k, Tally())
                 for k in sorted({*a.tallies, *b.tallies})},
        wall_s=a.wall_s + b.wall_s, interrupted=a.interrupted or b.interrupted,
        not_started=a.not_started + b.not_started, fatal=a.fatal or b.fatal,
        peak_in_flight=max(a.peak_in_flight, b.peak_in_flight),
        final_concurrency=b.final_concurrency, measures={**a.measures, **b.measures},
        models={k: a.models.get(k, Tally()) + b.models.get(k, Tally())
                for k in {*a.models, *b.models}},
    )


# -- status and fetch ------------------------------------------------------------------


@dataclass(frozen=True)
class BatchView:
    """A batch as `glmrun batch status` shows it: the server's view and what state.json knows."""

    info: BatchInfo
    model: str | None = None
    requests: int | None = None
    collected: bool = False


def view_line(view: BatchView) -> str:
    b = view.info
    bits = [b.id, b.status, f"{b.completed}/{b.total} done, {b.failed} failed"]
    if view.model:
        bits.append(f"model {view.model}")
    bits += [f"input {b.input_file_id}" if b.input_file_id else "",
             f"output {b.output_file_id}" if b.output_file_id else "",
             f"errors {b.error_file_id}" if b.error_file_id else "",
             "collected" if view.collected else ""]
    line = "  ".join(x for x in bits if x)
    return line + "".join(f"\n  {e}" for e in b.errors)


def chosen_batches(state: BatchState, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The named batches of state.json (default: those not collected yet)."""
    if not state.exists:
        raise errors.InputError(f"no batch state in {state.path} (was this folder used with "
                                "--mode batch?)")
    entries = state.batches()
    if not ids:
        return [e for e in entries if not e.get("collected")]
    by_id = {e["id"]: e for e in entries}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise errors.InputError(f"{', '.join(missing)}: not in {state.path}")
    return [by_id[i] for i in ids]


@dataclass(frozen=True)
class FetchResult:
    """What `fetch` found: the batches it collected, and those still running."""

    collected: tuple[BatchInfo, ...]
    running: tuple[BatchInfo, ...]

    @property
    def failed_ids(self) -> frozenset[str]:
        return frozenset(b.id for b in self.collected if b.status in FAILED_ENDINGS)


def fetch(
    out_dir: Path, ids: Sequence[str], api_for: Callable[[str | None], BatchApi],
    options: BatchOptions | None = None,
) -> FetchResult:
    """Look at the named batches (default: every one not collected); download the results of
    those that ended into the store. Nothing is collected while any named batch still runs."""
    collector = open_collector(out_dir, options or BatchOptions())
    entries = chosen_batches(collector.state, ids)
    looked: list[tuple[dict[str, Any], BatchInfo, BatchApi]] = []
    for entry in entries:
        api = api_for(entry.get("base_url"))
        info = api.get_batch(entry["id"])
        collector.state.update(info)
        looked.append((entry, info, api))
    running = tuple(info for _e, info, _a in looked if not info.terminal)
    if running:
        return FetchResult((), running)
    for _entry, info, api in looked:
        collector.collect(info, api)
    return FetchResult(tuple(info for _e, info, _a in looked), ())


def statuses(
    out_dir: Path, ids: Sequence[str], api_for: Callable[[str | None], BatchApi]
) -> list[BatchView]:
    """The server's view of the named batches (default: every batch recorded in out_dir).

    Named batches need not be in out_dir's state; those that are get their state refreshed.
    """
    state = BatchState.load(out_dir)
    entries = {e["id"]: e for e in state.batches()}
    wanted = list(ids) or list(entries)
    if not wanted:
        raise errors.InputError(f"no batches recorded in {state.path}")
    views = []
    for batch_id in wanted:
        entry = entries.get(batch_id)
        info = api_for(entry["base_url"] if entry else None).get_batch(batch_id)
        if entry is not None:
            state.update(info)
            views.append(BatchView(info, entry.get("model"), len(entry["lines"]),
                                   bool(entry.get("collected"))))
        else:
            views.append(BatchView(info))
    return views


def cancel(
    out_dir: Path, ids: Sequence[str], api_for: Callable[[str | None], BatchApi]
) -> list[BatchInfo]:
    """Ask the server to cancel the named batches (default: every running one of out_dir)."""
    state = BatchState.load(out_dir)
    entries = [e for e in chosen_batches(state, ids) if e.get("status") not in FAILED_ENDINGS
               and not (e.get("collected") and not ids)]
    cancelled = []
    for entry in entries:
        info = api_for(entry.get("base_url")).cancel_batch(entry["id"])
        state.update(info)
        cancelled.append(info)
    return cancelled
