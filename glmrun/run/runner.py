"""Run planned conversations: the worker pool, stopping, and every call through the gate.

`Runner.run(plans)` works through the plans with N worker threads, each running one
conversation at a time (glmrun.run.conversation), behind one adaptive gate on requests in
flight; each call is retried per the policy and async tasks are polled here. Each transcript
is written as its conversation ends, and the `RunSummary` holds only small per-conversation
rows (memory stays flat as suites grow).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from glmrun import errors
from glmrun.backends.base import Backend, RequestIdentity, TaskTicket
from glmrun.backends.cancel import CancelScope
from glmrun.errors import Interrupted
from glmrun.output.summary import RunRow, RunSummary, row_from_transcript
from glmrun.run.conversation import Conversation
from glmrun.run.limits import AdaptiveLimiter, Clock, RateCaps, Sleep
from glmrun.run.options import NullReporter, Reporter, RunOptions
from glmrun.safety.atomic import sweep_stale_temps
from glmrun.types import ChatRequest, Delta, Reply

if TYPE_CHECKING:
    from glmrun.output.writer import TranscriptWriter
    from glmrun.plan.plans import RunPlan
    from glmrun.run.resume import SavedState

T = TypeVar("T")


DeadlineExceeded = errors.DeadlineError

ABANDON_JOIN_S = 2.0  # after calls are cut off, how long run() waits for their workers


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
        if isinstance(backend, Backend):
            single = backend
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
        self.limiter = AdaptiveLimiter(
            options.concurrency, floor=1 if options.adaptive else options.concurrency,
            clock=clock)
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
        from glmrun.output import writer
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
        self._writer = writer.TranscriptWriter(out, self.options.formats,
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
        convo = Conversation(self, plan, saved)
        opts = self.options
        deadline = self._clock() + opts.deadline_s if opts.deadline_s is not None else None
        try:
            data = convo.execute(deadline)
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
        identity: RequestIdentity,
        backend: Backend,
        deadline: float | None,
        retries_log: list[dict[str, Any]],
        on_delta: Callable[[Delta], None] | None = None,
        ticket: TaskTicket | None = None,
        on_ticket: Callable[[TaskTicket], None] | None = None,
        sent_ids: list[str | None] | None = None,
    ) -> Reply:
        """One model call through the gate, retried per the policy; async tasks polled (the
        task `ticket` instead of submitting anew, when --resume kept one). Each attempt sends
        a fresh request_id (glmrun.run.request_ids), appended to `sent_ids`."""
        from glmrun.run.request_ids import for_attempt

        attempts = itertools.count()

        def next_request() -> ChatRequest:
            sent = for_attempt(request, identity.call, next(attempts))
            if sent_ids is not None:
                sent_ids.append(sent.params.get("request_id"))
            return sent

        if request.mode == "async":
            return self._call_async(next_request, identity=identity, backend=backend,
                                    deadline=deadline, retries_log=retries_log,
                                    ticket=ticket, on_ticket=on_ticket)
        return self._attempt(
            lambda: backend.complete(next_request(), on_delta, identity=identity),
            plan_id=identity.run_id, deadline=deadline, retries_log=retries_log,
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
        identity: RequestIdentity,
        backend: Backend,
        deadline: float | None,
        retries_log: list[dict[str, Any]],
        ticket: TaskTicket | None = None,
        on_ticket: Callable[[TaskTicket], None] | None = None,
    ) -> Reply:
        started = self._clock()
        plan_id = identity.run_id
        if ticket is None:
            ticket = self._attempt(lambda: backend.submit(next_request(), identity=identity),
                                   plan_id=plan_id, deadline=deadline, retries_log=retries_log)
            if on_ticket is not None:
                on_ticket(ticket)
        task = ticket
        policy = self.options.poll
        polls = 0
        while True:
            elapsed = self._clock() - started
            if policy.timeout_s is not None and elapsed >= policy.timeout_s:
                raise errors.TaskTimeoutError(
                    f"async task {task.task_id} did not finish within {policy.timeout_s:g} s "
                    f"({polls} polls)", task_id=task.task_id, polls=polls,
                )
            wait = policy.interval(polls)
            if policy.timeout_s is not None:
                wait = min(wait, max(0.0, policy.timeout_s - elapsed))
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
                note = f" after {polls} polls" if isinstance(exc, errors.TaskFailedError) else ""
                raise exc.where(note=note, task_id=task.task_id, polls=polls) from exc
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


def _row_from_transcript(data: Mapping[str, Any], plan: RunPlan) -> RunRow:
    return row_from_transcript(data, plan.group_id or plan.id)
