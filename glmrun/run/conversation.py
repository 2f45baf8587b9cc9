"""One conversation being run: its turns, tool rounds, checks and transcript.

It sends every request through the runner's gate (`Caller.call`: retries, limits, stopping)
and builds each from its plan (`RunPlan.request`): what planning rendered, never rendered
again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from glmrun import __version__, errors
from glmrun.backends.base import Backend, RequestIdentity, TaskTicket
from glmrun.output.summary import add_costs
from glmrun.run.options import Reporter, RunOptions
from glmrun.types import ENDPOINTS, ChatRequest, Delta, Reply, ToolCall, Usage

if TYPE_CHECKING:
    from glmrun.plan.plans import RunPlan
    from glmrun.run.resume import SavedState


class Caller(Protocol):
    """What a conversation needs of the runner: its options and display, a backend per base
    URL, and calls through its gate."""

    options: RunOptions
    reporter: Reporter

    def backend(self, base_url: str | None) -> Backend: ...

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
    ) -> Reply: ...


def now_iso() -> str:
    """The time now as transcripts write it (UTC, milliseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")



def preserves_thinking(params: Mapping[str, Any]) -> bool:
    """`thinking: {clear_thinking: false}`: every turn's reasoning is sent back (Zhipu's
    preserved thinking; the standard API clears it by default)."""
    thinking = params.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("clear_thinking") is False


class Conversation:
    """One planned conversation being executed: history, calls, tool rounds, expectations."""

    def __init__(self, runner: Caller, plan: RunPlan, saved: SavedState | None = None) -> None:
        from glmrun.run.resume import CallLog

        self.runner = runner
        self.log = CallLog(saved)  # what an earlier, cut-off run answered; what this one has
        self.plan = plan
        self.rendered = plan.rendered  # rendered once, by planning
        self.history: list[dict[str, Any]] = [dict(m) for m in self.rendered.messages]  # sent
        self.messages: list[dict[str, Any]] = [dict(m) for m in self.rendered.messages]
        self.calls: list[dict[str, Any]] = []
        self.tool_results: list[dict[str, Any]] = []
        self.expectations: list[dict[str, Any]] = []
        self.usage = Usage()
        self.cost: float | None = None
        self.extracted: ToolCall | None = None
        self.variables = plan.variables  # what its templates saw: checks and tools read them
        self.suite_dir = plan.spec.file.parent
        self.base_url = runner.options.base_url or plan.spec.base_url
        self.backend = runner.backend(self.base_url)
        self._requests = 0  # how many requests the conversation has made: the next call's number

    def _identity(self) -> RequestIdentity:
        """The next request's identity; requests --resume answers from the log count too."""
        self._requests += 1
        return RequestIdentity(self.plan.id, self._requests - 1)

    def execute(self, deadline: float | None) -> dict[str, Any]:
        """Run it to its end (`deadline` on the runner's clock) and return its transcript."""
        started_at, t0 = now_iso(), time.perf_counter()
        params = self.rendered.params
        error: errors.ApiError | None = None
        try:
            turns: list[tuple[str | Any | None, Sequence[Mapping[str, Any]]]] = [(None, ())]
            turns += [(t.content, t.expect) for t in self.rendered.turns]
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
            if outcome is not None and self.rendered.expect:  # the last reply, and every call
                whole = dataclasses.replace(outcome, tool_calls=tuple(every_call))
                self._check(self.rendered.expect, whole, None)
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
            request = self.plan.request(self.history)
            reply = self._call(request, turn, round_, deadline)
            replies.append(reply)
            # Zhipu: reasoning goes back with tool results (interleaved thinking), and with
            # every reply when clear_thinking is false (preserved thinking). What was sent
            # once stays in the history as sent, so the prompt's prefix (and its cache) holds.
            keep = bool(reply.tool_calls) or preserves_thinking(params)
            self._append(reply.to_message(with_reasoning=keep), reply.reasoning_content)
            if not reply.tool_calls:
                return replies
            extracted = [c for c in reply.tool_calls if c.name in self.plan.extractors]
            if extracted:  # a function without `respond:` is a schema: its call is the result
                self.extracted = extracted[0]
                for call in reply.tool_calls:
                    self.tool_results.append({**ToolAnswer(call.arguments, None, 0.0).to_record(
                        call, turn, round_), "extracted": True})
                return replies
            if round_ == max_rounds:
                raise errors.ToolRoundsError(
                    f"the model still called tools after max_tool_rounds={max_rounds}"
                )
            for call in reply.tool_calls:
                answer = answer_tool_call(
                    call, self.plan.tool_responders, variables=self.variables,
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
        record: dict[str, Any] = {
            "turn": turn, "round": round_,
            "endpoint": ENDPOINTS["batch" if self.plan.mode == "batch" else request.mode],
            "started_at": now_iso(), "retries": retries,
        }
        plan_id = self.plan.id
        identity = self._identity()
        reused = self.log.reuse(request)
        if reused is not None:  # answered before an interrupt: not sent again
            reply = reused.reply
            record = dict(reused.record) if reused.record is not None else {
                **record, **_call_record(reply)}
            cost = record.get("cost")
        else:
            try:
                reply = self.runner.call(
                    request, identity=identity, backend=self.backend, deadline=deadline,
                    retries_log=retries, sent_ids=sent_ids,
                    on_delta=lambda d: self.runner.reporter.delta(plan_id, d, turn=turn,
                                                                  round_=round_),
                    ticket=self.log.saved_ticket(request) if request.mode == "async" else None,
                    on_ticket=lambda t: self.log.submitted(request, t),
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
        from glmrun.checks.outcome import turn_outcome_from_replies

        return turn_outcome_from_replies(replies, self.variables, tuple(self.history),
                                         extracted=self.extracted)

    def _check(
        self, expect: Sequence[Mapping[str, Any]], outcome: Any, turn: int | None
    ) -> None:
        if not expect:
            return
        from glmrun.checks.registry import check_all

        for result in check_all(expect, outcome, suite_dir=self.suite_dir, judge=self._judge):
            item = result.to_dict()
            item["turn"] = turn
            self.expectations.append(item)

    def _judge(self, rubric: str, reply: str, model: str | None) -> tuple[bool, str]:
        from glmrun.checks.judge import build_judge_prompt, parse_judge_answer

        request = ChatRequest(
            model=model or self.plan.model,
            messages=tuple(build_judge_prompt(rubric, reply)),
            params={"temperature": 0.01}, mode="sync",
        )
        identity = self._identity()
        reused = self.log.reuse(request)
        if reused is not None:
            answer = reused.reply
        else:
            answer = self.runner.call(request, identity=identity, backend=self.backend,
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
            "variables": _jsonable(self.variables),
            "model": plan.model,
            "mode": plan.mode,
            "base_url": _shown_url(getattr(self.backend, "base_url", self.base_url)),
            "params": dict(params),
            "messages": self.messages,
            "calls": self.calls,
            "tool_results": self.tool_results,
            "expectations": self.expectations,
            "usage": self.usage.to_dict(),
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
        "usage": reply.usage.to_dict() if reply.usage else None,
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
