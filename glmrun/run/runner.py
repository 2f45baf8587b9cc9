"""Execute planned conversations: turns, tool rounds, retries, expectations, concurrency.

`Runner.run(plans)` works through the plans with N worker threads behind one adaptive gate on
requests in flight, writes each transcript atomically as its conversation ends, and returns a
`RunSummary` holding only small per-conversation rows (memory stays flat as suites grow).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from glmrun import __version__, errors
from glmrun.backends.base import Backend, TaskTicket
from glmrun.backends.cancel import CancelScope
from glmrun.models import PriceTable
from glmrun.output.summary import RunRow, RunSummary, add_costs, row_from_transcript
from glmrun.run.limits import AdaptiveLimiter, RateCaps, RetryPolicy
from glmrun.safety.atomic import sweep_stale_temps
from glmrun.types import ENDPOINTS, ChatRequest, Delta, Reply, ToolCall, Usage

if TYPE_CHECKING:
    from glmrun.output.transcript import TranscriptWriter
    from glmrun.plan.plans import RenderedPlan, RunPlan
    from glmrun.run.resume import SavedState

T = TypeVar("T")
Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class PollPolicy:
    """How async tasks are polled: a growing interval and an overall timeout."""

    start_s: float = 1.0
    factor: float = 1.5
    ceiling_s: float = 10.0
    timeout_s: float = 600.0

    def interval(self, poll: int) -> float:
        return min(self.ceiling_s, self.start_s * self.factor**poll)


@dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    formats: tuple[str, ...] = ("json", "md")
    concurrency: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll: PollPolicy = field(default_factory=PollPolicy)
    rpm: int | None = None
    tpm: int | None = None
    deadline_s: float | None = None  # per conversation
    resume: bool = False
    grace_s: float = 10.0  # after an interrupt, how long calls in flight may finish
    async_fanout: int = 256  # async tasks waiting at once (they hold no request slot)
    base_url: str | None = None
    secrets: tuple[str, ...] = ()
    seed: int | None = None  # for retry jitter, so tests are repeatable
    prices: PriceTable = field(default_factory=PriceTable)  # costs: glmrun.models + --prices
    manifest: bool = True  # write OUT/run.json at the end (glmrun.output.manifest)
    command: tuple[str, ...] | None = None  # the command line, for run.json
    run_settings: Mapping[str, Any] = field(default_factory=dict)  # more settings for run.json
    earlier_manifest: Mapping[str, Any] | None = None  # --last-failed: keep the runs not redone


class Reporter(Protocol):
    """What the runner tells the display; see `glmrun.output.progress`."""

    def started(self, total: int, skipped: int) -> None: ...
    def conversation_started(self, plan_id: str) -> None: ...
    def delta(self, plan_id: str, delta: Delta, *, turn: int, round_: int) -> None: ...
    def retrying(self, plan_id: str, error: errors.ApiError, wait_s: float) -> None: ...
    def conversation_finished(self, row: RunRow, transcript: Mapping[str, Any]) -> None: ...
    def status(self, in_flight: int, concurrency: int) -> None: ...
    def finished(self, summary: RunSummary) -> None: ...


class NullReporter:
    def started(self, total: int, skipped: int) -> None: pass
    def conversation_started(self, plan_id: str) -> None: pass
    def delta(self, plan_id: str, delta: Delta, *, turn: int, round_: int) -> None: pass
    def retrying(self, plan_id: str, error: errors.ApiError, wait_s: float) -> None: pass
    def conversation_finished(self, row: RunRow, transcript: Mapping[str, Any]) -> None: pass
    def status(self, in_flight: int, concurrency: int) -> None: pass
    def finished(self, summary: RunSummary) -> None: pass


class Interrupted(BaseException):
    """The run is stopping and this conversation is cut off: it gets no transcript, and what
    it had answered is saved for --resume (`glmrun.run.resume`).

    A BaseException, like KeyboardInterrupt: it is not an error, and no `except Exception` on
    its way (a check, the judge) may turn it into one.
    """


DeadlineExceeded = errors.DeadlineError

ABANDON_JOIN_S = 2.0  # after calls are cut off, how long run() waits for their workers


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Runner:
    """Runs plans against one backend; see the module docstring.

    Stopping has two steps. `stop` (Ctrl-C, a fatal error, a transcript that cannot be
    written): no conversation, call or retry starts, and no one waits for a request slot;
    calls in flight, and async tasks already submitted, go on. `abandon` (a second Ctrl-C,
    or the grace period over): calls in flight are cut off too (`glmrun.backends.cancel`). A
    conversation cut off either way leaves its answered calls and its pending task for
    --resume. `run()` then shuts down in order: workers drained (or, once abandoned, given
    ABANDON_JOIN_S), then intake closed under the lock, then the writer closed.
    """

    def __init__(
        self,
        backend: Backend | Callable[[str | None], Backend],
        options: RunOptions,
        reporter: Reporter | None = None,
        *,
        sleep: Sleep | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        # One backend, or a factory giving one per base URL (files may name their own).
        if hasattr(backend, "complete"):
            single = cast(Backend, backend)
            self._backend_for: Callable[[str | None], Backend] = lambda _url: single
        else:
            self._backend_for = backend
        self._backends: dict[str | None, Backend] = {}
        self._backends_lock = threading.Lock()
        self.options = options
        self.reporter: Reporter = reporter or NullReporter()
        self.stop = threading.Event()  # start nothing more
        self.abandon = threading.Event()  # and cut off the calls in flight
        self.interrupted = threading.Event()  # Ctrl-C / SIGTERM
        self._sleep = sleep or self._interruptible_sleep
        self._poll_sleep = sleep or self._abandonable_sleep
        self._clock = clock
        self.limiter = AdaptiveLimiter(options.concurrency, clock=clock)
        self.caps = RateCaps(options.rpm, options.tpm, clock=clock, sleep=self._sleep)
        self._rng = random.Random(options.seed)
        self._rng_lock = threading.Lock()
        # What workers and run() share, all under this one lock; re-entrant because the
        # signal handler (interrupt()) runs on the main thread, maybe while it holds it.
        self._lock = threading.RLock()
        self._fatal: errors.ApiError | None = None
        self._closed = False  # run() is reporting: no worker adds anything any more
        self._sent: set[str] = set()  # conversations in flight that have sent a request
        self._scopes: set[CancelScope] = set()  # calls in flight, to cut off
        self._cut_off: dict[str, SavedState] = {}  # for --resume
        self._resumed_done: list[str] = []  # had a saved state, now have their transcript
        self._writer: TranscriptWriter | None = None

    # -- whole run ---------------------------------------------------------------------

    def interrupt(self) -> bool:
        """Ctrl-C / SIGTERM. The first stops starting new work (calls in flight and tasks
        already submitted may finish within the grace period) and answers True; the next
        abandons the calls in flight."""
        with self._lock:
            first = not self.interrupted.is_set()
            self.interrupted.set()
        self.stop.set()
        if not first:
            self.abandon_calls()
        return first

    def abandon_calls(self) -> None:
        """Cut off every call in flight now; their conversations end as Interrupted."""
        self.stop.set()
        with self._lock:
            self.abandon.set()
            scopes = list(self._scopes)
        for scope in scopes:
            scope.cancel("abandoned")

    def run(self, plans: Sequence[RunPlan]) -> RunSummary:
        from glmrun.output import transcript as tx
        from glmrun.run import resume

        started = self._clock()
        summary = RunSummary(total=len(plans),
                             conversations=len({plan.conversation for plan in plans}))
        out = self.options.out_dir
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.InputError(
                f"cannot create the transcript folder {out}: {exc.strerror or exc}") from None
        sweep_stale_temps(out)  # what a killed run was writing when it died
        sweep_stale_temps(out / resume.FOLDER)
        if not self.options.resume and (out / resume.FOLDER).is_dir():
            resume.discard(out, [p.id for p in plans])  # a fresh run sends them all again
        todo: list[RunPlan] = []
        for plan in plans:
            done = tx.read_complete(out / f"{plan.id}.json") if self.options.resume else None
            # --resume keeps what passed or failed; an error never finished: run it again
            if done is not None and done["status"] in ("passed", "failed"):
                summary.skipped += 1
                summary.add(_row_from_transcript(done, plan), plan)
            else:
                todo.append(plan)
        self.reporter.started(len(plans), summary.skipped)

        workers = self.options.concurrency
        if any(p.mode == "async" for p in todo):
            workers = max(workers, self.options.async_fanout)
        workers = max(1, min(workers, len(todo)))
        source = iter(todo)

        def next_plan() -> RunPlan | None:
            with self._lock:
                return None if self.stop.is_set() else next(source, None)

        def work() -> None:
            while (plan := next_plan()) is not None:
                self._run_one(plan, summary)

        threads = [threading.Thread(target=work, name=f"glmrun-{i}", daemon=True)
                   for i in range(workers)]
        self._writer = tx.TranscriptWriter(out, self.options.formats,
                                           secrets=self.options.secrets)
        try:
            for t in threads:
                t.start()
            self._wait(threads)
        finally:
            with self._lock:  # from here on, a worker still running adds nothing anywhere
                self._closed = True
                cut_off, resumed_done = dict(self._cut_off), list(self._resumed_done)
                fatal = self._fatal
            write_error = self._writer.close()  # all accepted transcripts are on disk now
        for plan_id, state in cut_off.items():
            try:
                resume.save(out, plan_id, state)
            except OSError as exc:
                write_error = write_error or exc
        if write_error is None:
            resume.discard(out, resumed_done)
        summary.wall_s = self._clock() - started
        summary.interrupted = self.interrupted.is_set()
        summary.fatal = fatal
        if write_error is not None:
            summary.fatal = errors.OutputError(
                f"cannot write transcripts to {out}/: {write_error}; what was written is kept: "
                "fix it, then run again with --resume")
        summary.not_started = len(plans) - summary.finished
        summary.peak_in_flight = self.limiter.peak_in_flight
        summary.final_concurrency = self.limiter.width
        summary.rows.sort(key=lambda r: r.id)
        summary.passed_ids.sort()
        self.reporter.finished(summary)
        return summary

    def _wait(self, threads: list[threading.Thread]) -> None:
        """Until every worker is done; also the deadlines' watchdog and the grace period."""
        grace_end: float | None = None
        while alive := [t for t in threads if t.is_alive()]:
            alive[0].join(0.1)  # one tick, however many workers
            self._cut_off_late_calls()
            self.reporter.status(self.limiter.in_flight, self.limiter.width)
            if self.interrupted.is_set() and not self.abandon.is_set():
                grace_end = grace_end or time.monotonic() + self.options.grace_s
                if time.monotonic() >= grace_end:
                    self.abandon_calls()
            if self.abandon.is_set():
                until = time.monotonic() + ABANDON_JOIN_S
                for t in threads:  # a worker stuck in user code is left behind (a daemon)
                    t.join(max(0.0, until - time.monotonic()))
                return

    def _cut_off_late_calls(self) -> None:
        """Cut off the calls whose conversation's deadline has passed."""
        now = self._clock()
        with self._lock:
            late = [s for s in self._scopes if s.deadline is not None and now >= s.deadline]
        for scope in late:
            scope.cancel("deadline")

    def backend(self, base_url: str | None) -> Backend:
        """The backend serving base_url (None: the run's default)."""
        with self._backends_lock:
            if base_url not in self._backends:
                self._backends[base_url] = self._backend_for(base_url)
            return self._backends[base_url]

    def close(self) -> None:
        with self._backends_lock:
            for backend in self._backends.values():
                backend.close()

    def _interruptible_sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise self._why_stopped()

    def _abandonable_sleep(self, seconds: float) -> None:
        if self.abandon.wait(seconds):
            raise Interrupted()

    def _why_stopped(self, task_id: str | None = None) -> Interrupted | errors.ApiError:
        """What a conversation that may not go on raises: Interrupted, or after a fatal error
        (auth, balance) an error of its own that names it and says what did happen: nothing
        sent, or (`task_id`) an async task submitted and then no longer polled."""
        with self._lock:
            fatal = self._fatal
        if fatal is None or self.interrupted.is_set():
            return Interrupted()
        done = (f"async task {task_id} was submitted, then no longer polled" if task_id
                else "its next request was not sent")
        return errors.RunStoppedError(f"{done}: the run stopped after: {fatal}")

    # -- one conversation --------------------------------------------------------------

    def _run_one(self, plan: RunPlan, summary: RunSummary) -> None:
        from glmrun.run import resume

        self.reporter.conversation_started(plan.id)
        saved = resume.load(self.options.out_dir, plan.id) if self.options.resume else None
        try:
            convo = Conversation(self, plan, saved)  # renders the plan
        except Exception as exc:  # e.g. a local image that changed since planning
            row = RunRow(
                id=plan.id, name=plan.spec.name, group=plan.group_id or plan.id,
                pass_rate=plan.spec.pass_rate, status="error", tokens=0, duration_ms=0.0,
                error=f"could not render the conversation: {exc}",
            )
            if self._accept(plan, row, None, summary, resumed=False):
                self.reporter.conversation_finished(row, {"messages": []})
            return
        try:
            data = convo.execute()
        except Interrupted:
            self._keep_for_resume(plan.id, convo.log.state())
            return
        finally:
            with self._lock:
                sent = plan.id in self._sent
                self._sent.discard(plan.id)
        error = data.get("error") or {}
        if error.get("kind") == errors.RunStoppedError.kind and not sent:
            return  # stopped before it sent anything: not run, like those no worker had taken
        if self.interrupted.is_set() and data["status"] == "error":
            self._keep_for_resume(plan.id, convo.log.state())
            return  # cut off by the interrupt: leave it for --resume
        row = _row_from_transcript(data, plan)
        if self._accept(plan, row, data, summary, resumed=saved is not None):
            self.reporter.conversation_finished(row, data)

    def _accept(
        self, plan: RunPlan, row: RunRow, data: Mapping[str, Any] | None, summary: RunSummary,
        *, resumed: bool,
    ) -> bool:
        """Hand a finished conversation to the writer and the summary, unless run() has
        already closed them (then it was cut off like any other: --resume runs it)."""
        with self._lock:
            if self._closed:
                return False
            if data is not None:
                assert self._writer is not None
                if not self._writer.submit(data):  # an earlier transcript could not be written:
                    self.stop.set()  # start nothing more, every result would be lost the same way
                    return False
                if resumed:
                    self._resumed_done.append(plan.id)
            summary.add(row, plan)
            return True

    def _keep_for_resume(self, plan_id: str, state: SavedState | None) -> None:
        if state is None:
            return
        with self._lock:
            if not self._closed:
                self._cut_off[plan_id] = state

    # -- calls with retries --------------------------------------------------------------

    def call(
        self,
        request: ChatRequest,
        *,
        backend: Backend,
        plan_id: str,
        deadline: float | None,
        retries_log: list[dict[str, Any]],
        on_delta: Callable[[Delta], None] | None = None,
        ticket: TaskTicket | None = None,
        on_ticket: Callable[[TaskTicket], None] | None = None,
        call_index: int = 0,
        sent_ids: list[str | None] | None = None,
    ) -> Reply:
        """One model call through the gate, retried per the policy; async tasks polled (the
        task `ticket` instead of submitting anew, when --resume kept one). Each attempt sends
        a fresh request_id (glmrun.run.request_ids), appended to `sent_ids`."""
        from glmrun.run.request_ids import for_attempt

        attempts = itertools.count()

        def next_request() -> ChatRequest:
            sent = for_attempt(request, call_index, next(attempts))
            if sent_ids is not None:
                sent_ids.append(sent.params.get("request_id"))
            return sent

        if request.mode == "async":
            return self._call_async(next_request, backend=backend, plan_id=plan_id,
                                    deadline=deadline, retries_log=retries_log,
                                    ticket=ticket, on_ticket=on_ticket)
        return self._attempt(
            lambda: backend.complete(next_request(), on_delta),
            plan_id=plan_id, deadline=deadline, retries_log=retries_log,
        )

    @contextlib.contextmanager
    def _scope(self, deadline: float | None) -> Iterator[CancelScope]:
        """A call that the deadline's watchdog or abandon_calls() can cut off."""
        scope = CancelScope(deadline)
        with self._lock:
            if self.abandon.is_set():
                raise Interrupted()
            self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            with self._lock:
                self._scopes.discard(scope)

    def _attempt(
        self,
        fn: Callable[[], T],
        *,
        plan_id: str,
        deadline: float | None,
        retries_log: list[dict[str, Any]],
        finishing: bool = False,
        task_id: str | None = None,
    ) -> T:
        """Call fn through the gate with retries. `finishing`: the poll of a task already
        submitted (`task_id`), which an interrupt lets go on (within the grace period)."""
        attempt = 0
        while True:
            self._check(deadline, finishing=finishing, task_id=task_id)
            if not self.limiter.acquire(self.abandon if finishing else self.stop, deadline):
                # the deadline passed, or a stop
                self._check(deadline, finishing=finishing, task_id=task_id)
                raise self._why_stopped(task_id)
            scope: CancelScope | None = None
            try:
                self.caps.wait_turn()  # counted once it has a slot, just before it is sent
                with self._lock:
                    self._sent.add(plan_id)
                with self._scope(deadline) as scope:
                    result = fn()
            except errors.ApiError as exc:
                if exc.fatal and not (self.abandon.is_set() or self.interrupted.is_set()):
                    with self._lock:  # stop first: the slot given back below must not let
                        self._fatal = self._fatal or exc  # a waiting call through
                    self.stop.set()
                self.limiter.release(
                    rate_limited=isinstance(exc, errors.RateLimitError), ok=False,
                    over_concurrency=exc.code == "1302",
                )
                if scope is not None and scope.reason == "deadline":
                    raise self._deadline_error() from exc
                if self.abandon.is_set() or self.interrupted.is_set():
                    raise Interrupted() from exc  # no retry once stopping: --resume sends it
                if exc.fatal:
                    raise
                attempt += 1
                if not exc.retryable or attempt > self.options.retry.retries:
                    raise
                with self._rng_lock:
                    wait = self.options.retry.wait_s(attempt, exc, self._rng)
                if deadline is not None and self._clock() + wait > deadline:
                    raise
                retries_log.append(
                    {"attempt": attempt, "error": exc.to_dict(), "wait_ms": round(wait * 1000, 3)}
                )
                self.reporter.retrying(plan_id, exc, wait)
                self._sleep(wait)
                continue
            except BaseException:  # Interrupted, or a bug: never leak the slot
                self.limiter.release(ok=False)
                raise
            self.limiter.release(ok=True)
            if isinstance(result, Reply) and result.usage is not None:
                self.caps.add_tokens(result.usage.total_tokens)
            return result

    def _call_async(
        self,
        next_request: Callable[[], ChatRequest],
        *,
        backend: Backend,
        plan_id: str,
        deadline: float | None,
        retries_log: list[dict[str, Any]],
        ticket: TaskTicket | None = None,
        on_ticket: Callable[[TaskTicket], None] | None = None,
    ) -> Reply:
        started = self._clock()
        if ticket is None:
            ticket = self._attempt(lambda: backend.submit(next_request()), plan_id=plan_id,
                                   deadline=deadline, retries_log=retries_log)
            if on_ticket is not None:
                on_ticket(ticket)
        task = ticket
        policy = self.options.poll
        polls = 0
        while True:
            elapsed = self._clock() - started
            if elapsed >= policy.timeout_s:
                timeout = errors.TaskTimeoutError(
                    f"async task {task.task_id} did not finish within {policy.timeout_s:g} s "
                    f"({polls} polls)"
                )
                timeout.task_id, timeout.polls = task.task_id, polls
                raise timeout
            wait = min(policy.interval(polls), max(0.0, policy.timeout_s - elapsed))
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - self._clock()))
            try:
                self._poll_sleep(wait)
                self._check(deadline, finishing=True, task_id=task.task_id)
                polls += 1
                reply = self._attempt(lambda: backend.poll(task), plan_id=plan_id,
                                      deadline=deadline, retries_log=retries_log,
                                      finishing=True, task_id=task.task_id)
            except errors.ApiError as exc:  # the transcript names the task and its polls
                if isinstance(exc, errors.TaskFailedError):
                    exc.message = f"{exc.message} after {polls} polls"
                exc.task_id, exc.polls = task.task_id, polls
                raise
            if reply is not None:
                total = (self._clock() - started) * 1000
                return dataclasses.replace(
                    reply, task_id=task.task_id,
                    request_id=reply.request_id or task.request_id,
                    polls=polls, queue_ms=round(total, 3), latency_ms=total,
                )

    def _check(
        self, deadline: float | None, *, finishing: bool = False, task_id: str | None = None
    ) -> None:
        if self.abandon.is_set():
            raise Interrupted()
        if self.stop.is_set() and not (finishing and self.interrupted.is_set()):
            raise self._why_stopped(task_id)
        if deadline is not None and self._clock() >= deadline:
            raise self._deadline_error()

    def _deadline_error(self) -> errors.DeadlineError:
        return errors.DeadlineError(
            f"conversation deadline of {self.options.deadline_s:g} s exceeded")


def preserves_thinking(params: Mapping[str, Any]) -> bool:
    """`thinking: {clear_thinking: false}`: every turn's reasoning is sent back (Zhipu's
    preserved thinking; the standard API clears it by default)."""
    thinking = params.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("clear_thinking") is False


class Conversation:
    """One planned conversation being executed: history, calls, tool rounds, expectations."""

    def __init__(self, runner: Runner, stub: RunPlan, saved: SavedState | None = None) -> None:
        from glmrun.run.resume import CallLog

        self.runner = runner
        self.log = CallLog(saved)  # what an earlier, cut-off run answered; what this one has
        self.plan: RenderedPlan = stub.materialize()  # rendered only now: memory stays flat
        plan = self.plan
        self.history: list[dict[str, Any]] = [dict(m) for m in plan.messages]  # as sent
        self.messages: list[dict[str, Any]] = [dict(m) for m in plan.messages]  # + reasoning
        self.calls: list[dict[str, Any]] = []
        self.tool_results: list[dict[str, Any]] = []
        self.expectations: list[dict[str, Any]] = []
        self.usage = Usage()
        self.cost: float | None = None
        # functions declared without `respond:` (a tool as a JSON schema): a call ends the turn
        self.extractors = frozenset(
            t["function"]["name"] for t in plan.params.get("tools") or ()
            if t.get("type") == "function" and "respond" not in t
        )
        self.extracted: ToolCall | None = None
        self.suite_dir = plan.spec.file.parent
        self.base_url = runner.options.base_url or plan.spec.base_url
        self.backend = runner.backend(self.base_url)

    def execute(self) -> dict[str, Any]:
        from glmrun.plan.plans import wire_params

        started_at, t0 = now_iso(), time.perf_counter()
        opts = self.runner.options
        deadline = (
            self.runner._clock() + opts.deadline_s if opts.deadline_s is not None else None
        )
        params = wire_params(self.plan.params)
        error: errors.ApiError | None = None
        try:
            turns: list[tuple[str | Any | None, Sequence[Mapping[str, Any]]]] = [(None, ())]
            turns += [(t.content, t.expect) for t in self.plan.turns]
            outcome = None
            every_call: list[ToolCall] = []
            for index, (content, expect) in enumerate(turns):
                if content is not None:
                    self._answer_extraction()
                    self._append({"role": "user", "content": content})
                replies = self._turn(index, params, deadline)
                outcome = self._outcome(replies)
                every_call += outcome.tool_calls
                self._check(expect, outcome, index)
            if outcome is not None:  # the last reply, and every call the conversation made
                whole = dataclasses.replace(outcome, tool_calls=tuple(every_call))
                self._check(self.plan.expect, whole, None)
        except errors.ApiError as exc:
            error = exc
        except Exception as exc:  # a bug must cost one conversation, never the run
            error = errors.InternalError(f"internal error: {type(exc).__name__}: {exc}")
        except (SystemExit, KeyboardInterrupt) as exc:  # from user code: ends only this one
            error = errors.InternalError(
                f"user code raised {type(exc).__name__}" + (f": {exc}" if str(exc) else ""))
        status = "error" if error else (
            "failed" if any(not e["passed"] for e in self.expectations) else "passed"
        )
        return self._transcript(params, status, error, started_at, t0)

    def _turn(self, turn: int, params: Mapping[str, Any], deadline: float | None) -> list[Reply]:
        from glmrun.run.tools import ToolAnswer, answer_tool_call

        replies: list[Reply] = []
        self.extracted = None
        max_rounds = self.plan.spec.max_tool_rounds
        for round_ in range(max_rounds + 1):
            request = ChatRequest(
                model=self.plan.model, messages=tuple(self.history), params=params,
                mode=self.plan.mode if self.plan.mode != "batch" else "sync",  # type: ignore[arg-type]
            )
            reply = self._call(request, turn, round_, deadline)
            replies.append(reply)
            # Zhipu: reasoning goes back with tool results (interleaved thinking), and with
            # every reply when clear_thinking is false (preserved thinking). What was sent
            # once stays in the history as sent, so the prompt's prefix (and its cache) holds.
            keep = bool(reply.tool_calls) or preserves_thinking(params)
            self._append(reply.to_message(with_reasoning=keep), reply.reasoning_content)
            if not reply.tool_calls:
                return replies
            extracted = [c for c in reply.tool_calls if c.name in self.extractors]
            if extracted:  # a function without `respond:` is a schema: its call is the result
                self.extracted = extracted[0]
                for call in reply.tool_calls:
                    self.tool_results.append({**ToolAnswer(call.arguments, None, 0.0).to_record(
                        call, turn, round_), "extracted": True})
                return replies
            if round_ == max_rounds:
                raise errors.BadRequestError(
                    f"the model still called tools after max_tool_rounds={max_rounds}"
                )
            for call in reply.tool_calls:
                answer = answer_tool_call(
                    call, self.plan.tool_responders, variables=self.plan.variables,
                    suite_dir=self.suite_dir, render=self._render,
                )
                self.tool_results.append(answer.to_record(call, turn, round_))
                self._append({"role": "tool", "tool_call_id": call.id, "content": answer.content})
        return replies

    def _answer_extraction(self) -> None:
        """A turn that ended at an extraction call: before the next user message, each call of
        that reply is answered with its own arguments (the API wants every call answered)."""
        last = self.history[-1] if self.history else {}
        if self.extracted is None or last.get("role") != "assistant":
            return
        for call in last.get("tool_calls") or ():
            self._append({"role": "tool", "tool_call_id": call["id"],
                          "content": call["function"]["arguments"]})

    def _append(self, message: dict[str, Any], reasoning: str | None = None) -> None:
        self.history.append(message)
        self.messages.append({**message, "reasoning_content": reasoning} if reasoning else message)

    def _render(self, value: Any, scope: Mapping[str, Any]) -> Any:
        from glmrun.plan.templating import render_value

        return render_value(value, scope, root=self.suite_dir)

    def _call(
        self, request: ChatRequest, turn: int, round_: int, deadline: float | None
    ) -> Reply:
        retries: list[dict[str, Any]] = []
        sent_ids: list[str | None] = []
        call_index = len(self.calls)  # the run's calls so far, reused ones included
        record: dict[str, Any] = {
            "turn": turn, "round": round_,
            "endpoint": ENDPOINTS["batch" if self.plan.mode == "batch" else request.mode],
            "started_at": now_iso(), "retries": retries,
        }
        plan_id = self.plan.id
        reused = self.log.reuse(request)
        if reused is not None:  # answered before an interrupt: not sent again
            reply = reused.reply
            record = dict(reused.record) if reused.record is not None else {
                **record, **_call_record(reply)}
            cost = record.get("cost")
        else:
            try:
                reply = self.runner.call(
                    request, backend=self.backend, plan_id=plan_id, deadline=deadline,
                    retries_log=retries,
                    on_delta=lambda d: self.runner.reporter.delta(plan_id, d, turn=turn,
                                                                  round_=round_),
                    ticket=self.log.saved_ticket(request) if request.mode == "async" else None,
                    on_ticket=lambda t: self.log.submitted(request, t),
                    call_index=call_index, sent_ids=sent_ids,
                )
            except errors.ApiError as exc:
                record.update(_call_record(NO_REPLY), error=exc.to_dict(), task_id=exc.task_id,
                              polls=exc.polls, cost=None, **_sent_ids(sent_ids, retries))
                self.calls.append(record)
                raise
            cost = self.runner.options.prices.cost(request.model, reply.usage,
                                                   batch=self.plan.mode == "batch")
            record.update(_call_record(reply), cost=cost, **_sent_ids(sent_ids, retries))
            self.log.answered(request, reply, record)
        self.calls.append(record)
        if reply.usage is not None:
            self.usage = self.usage + reply.usage
        self.cost = add_costs(self.cost, cost)
        return reply

    def _outcome(self, replies: Sequence[Reply]) -> Any:
        from glmrun.checks.expectations import turn_outcome_from_replies

        return turn_outcome_from_replies(replies, self.plan.variables, tuple(self.history),
                                         extracted=self.extracted)

    def _check(
        self, expect: Sequence[Mapping[str, Any]], outcome: Any, turn: int | None
    ) -> None:
        if not expect:
            return
        from glmrun.checks.expectations import check_all

        for result in check_all(expect, outcome, suite_dir=self.suite_dir, judge=self._judge):
            item = result.to_dict()
            item["turn"] = turn
            self.expectations.append(item)

    def _judge(self, rubric: str, reply: str, model: str | None) -> tuple[bool, str]:
        from glmrun.checks.expectations import build_judge_prompt, parse_judge_answer

        request = ChatRequest(
            model=model or self.plan.model,
            messages=tuple(build_judge_prompt(rubric, reply)),
            params={"temperature": 0.01}, mode="sync",
        )
        reused = self.log.reuse(request)
        if reused is not None:
            answer = reused.reply
        else:
            answer = self.runner.call(request, backend=self.backend, plan_id=self.plan.id,
                                      deadline=None, retries_log=[])
            self.log.answered(request, answer, None)
        return parse_judge_answer(answer.content or "")

    def _transcript(
        self, params: Mapping[str, Any], status: str, error: errors.ApiError | None,
        started_at: str, t0: float,
    ) -> dict[str, Any]:
        plan, spec = self.plan, self.plan.spec
        return {
            "transcript_version": 1,
            "glmrun_version": __version__,
            "id": plan.id,
            "name": spec.name,
            "description": spec.description,
            "source": {
                "file": plan.source or spec.file.as_posix(),
                "sha256": spec.file_sha256,
                "line": spec.at.line if spec.at else None,
            },
            "case": (
                {"index": plan.case_index, "vars": dict(plan.case_vars)}
                if plan.case_index is not None else None
            ),
            "repeat": (
                {"index": plan.repeat_index, "of": spec.repeat}
                if plan.repeat_index is not None else None
            ),
            "pass_rate": spec.pass_rate,
            "tags": list(spec.tags),
            "variables": _jsonable(plan.variables),
            "model": plan.model,
            "mode": plan.mode,
            "base_url": _shown_url(getattr(self.backend, "base_url", self.base_url)),
            "params": dict(params),
            "messages": self.messages,
            "calls": self.calls,
            "tool_results": self.tool_results,
            "expectations": self.expectations,
            "usage": dataclasses.asdict(self.usage),
            "cost": None if self.cost is None else round(self.cost, 8),
            "status": status,
            "error": error.to_dict() if error else None,
            "started_at": started_at,
            "finished_at": now_iso(),
            "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
        }


NO_REPLY = Reply(content=None, finish_reason=None)  # what a failed call records


def _shown_url(url: str | None) -> str | None:
    """A base URL as transcripts show it: without `user:password@`."""
    from glmrun.safety.baseurl import display

    return display(url) if url else url


def _sent_ids(sent: list[str | None], retries: list[dict[str, Any]]) -> dict[str, Any]:
    """The request_id each attempt sent: the call's last as `sent_request_id`, each retried
    attempt's on its retry entry (absent where nothing was sent: an async task kept by
    --resume)."""
    for retry in retries:
        if retry["attempt"] <= len(sent):
            retry["request_id"] = sent[retry["attempt"] - 1]
    return {"sent_request_id": sent[-1]} if sent else {}


def _call_record(reply: Reply) -> dict[str, Any]:
    return {
        "content": reply.content,
        "reasoning_content": reply.reasoning_content,
        "tool_calls": [tc.to_message() for tc in reply.tool_calls],
        "finish_reason": reply.finish_reason,
        "usage": dataclasses.asdict(reply.usage) if reply.usage else None,
        "id": reply.id,
        "request_id": reply.request_id,
        "task_id": reply.task_id,
        "latency_ms": round(reply.latency_ms, 3),
        "ttft_ms": round(reply.ttft_ms, 3) if reply.ttft_ms is not None else None,
        "chunks": reply.chunks,
        "chunk_offsets_ms": list(reply.chunk_offsets_ms) if reply.chunk_offsets_ms else None,
        "polls": reply.polls,
        "queue_ms": reply.queue_ms,
        "cached": reply.cached,
        "web_search": [dict(w) for w in reply.web_search],
        "content_filter": [dict(c) for c in reply.content_filter],
    }


def _row_from_transcript(data: Mapping[str, Any], plan: RunPlan) -> RunRow:
    return row_from_transcript(data, plan.group_id or plan.id)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)

