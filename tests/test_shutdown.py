"""Stopping a run, on the runner with scripted backends: what an interrupt leaves for --resume,
who may still send after a stop, user code that exits, and the order of shutdown.

Each test makes the stop happen at an exact point (a backend that interrupts the run from
inside a call, or waits on the gate's count of waiting threads), so none of them sleeps on a
timer and hopes.
"""

from __future__ import annotations

import json
import textwrap
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from glmrun import errors
from glmrun.backends.base import RequestIdentity, TaskTicket
from glmrun.backends.scripted import ScriptedBackend, text_reply
from glmrun.load.spec import load_file
from glmrun.plan.plans import RunPlan, plan_runs
from glmrun.run import resume
from glmrun.run import runner as runner_module
from glmrun.run.limits import PollPolicy
from glmrun.run.options import RunOptions
from glmrun.run.runner import Runner
from glmrun.types import ChatRequest, Reply, ToolCall

FAST_POLL = PollPolicy(start_s=0.001, factor=1.0, ceiling_s=0.001, timeout_s=30)


def plans(folder: Path, text: str, **kw: Any) -> list[RunPlan]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "c.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return plan_runs([load_file(path)], **kw)


def options(tmp_path: Path, **kw: Any) -> RunOptions:
    return RunOptions(out_dir=tmp_path / "out", formats=("json",), seed=1, poll=FAST_POLL, **kw)


def transcripts(out: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text("utf-8")) for p in sorted(out.glob("*.json"))
            if p.name != "run.json"}  # the run's manifest


def last_user(request: ChatRequest) -> str:
    return next(str(m["content"]) for m in reversed(request.messages) if m["role"] == "user")


class Counting(ScriptedBackend):
    """A scripted backend that counts what reaches it: chat calls by their last user message,
    submits by the same, polls by task id; `hook(kind, request)` runs inside each request."""

    def __init__(self, hook: Callable[[str, ChatRequest], None] | None = None,
                 async_polls: int = 1) -> None:
        super().__init__(async_polls=async_polls)
        self.hook = hook or (lambda kind, request: None)
        self.calls: Counter[str] = Counter()
        self.submits: Counter[str] = Counter()
        self.polls: Counter[str] = Counter()
        self.requests = 0
        self.count_lock = threading.Lock()

    def complete(self, request: ChatRequest, on_delta: Any = None, *,
                 identity: RequestIdentity) -> Reply:
        with self.count_lock:
            self.calls[last_user(request)] += 1
            self.requests += 1
        self.hook("complete", request)
        return super().complete(request, on_delta, identity=identity)

    def submit(self, request: ChatRequest, *, identity: RequestIdentity) -> TaskTicket:
        with self.count_lock:
            self.submits[last_user(request)] += 1
            self.requests += 1
        self.hook("submit", request)
        return super().submit(request, identity=identity)

    def poll(self, ticket: TaskTicket) -> Reply | None:
        with self.count_lock:
            self.polls[ticket.task_id] += 1
            self.requests += 1
        request, _ = self._tasks[ticket.task_id]
        self.hook("poll", request)
        return super().poll(ticket)


THREE_TURNS = """
    model: glm-4-flash
    messages: [{role: user, content: "one {{ n }}"}]
    turns: ["two {{ n }}", "three {{ n }}"]
    cases: [{n: 1}, {n: 2}]
"""


@pytest.mark.timeout(20)
def test_an_interrupt_between_turns_keeps_the_answered_ones_and_resume_sends_only_the_rest(
    tmp_path: Path,
) -> None:
    holder: dict[str, Runner] = {}

    def interrupt_after(kind: str, request: ChatRequest) -> None:
        if last_user(request) == "two 1":  # in flight when Ctrl-C comes: it still finishes
            holder["runner"].interrupt()

    first = Counting(interrupt_after)
    p = plans(tmp_path, THREE_TURNS)
    holder["runner"] = Runner(first, options(tmp_path, concurrency=1))
    summary = holder["runner"].run(p)

    out = tmp_path / "out"
    assert summary.interrupted and summary.finished == 0 and summary.exit_code == 130
    assert first.calls == Counter({"one 1": 1, "two 1": 1})  # case 2 never started
    assert transcripts(out) == {}
    saved = json.loads((out / resume.FOLDER / "c--case1.json").read_text("utf-8"))
    assert [a["reply"]["content"] for a in saved["answered"]] == [
        "echo: one 1", "echo: two 1"]
    assert saved["pending"] is None

    second = Counting()
    summary = Runner(second, options(tmp_path, concurrency=1, resume=True)).run(p)
    assert summary.exit_code == 0 and summary.count("passed") == 2
    assert second.calls == Counter({"three 1": 1, "one 2": 1, "two 2": 1, "three 2": 1})
    t = transcripts(out)["c--case1"]
    assert [m["content"] for m in t["messages"]] == [
        "one 1", "echo: one 1", "two 1", "echo: two 1", "three 1", "echo: three 1"]
    assert [c["content"] for c in t["calls"]] == ["echo: one 1", "echo: two 1", "echo: three 1"]
    assert t["usage"]["total_tokens"] == sum(c["usage"]["total_tokens"] for c in t["calls"])
    assert [c["cost"] is not None for c in t["calls"]] == [t["cost"] is not None] * 3
    assert not (out / resume.FOLDER).exists()  # used up: the transcripts are written


def test_a_saved_state_is_not_reused_for_a_conversation_that_changed(tmp_path: Path) -> None:
    holder: dict[str, Runner] = {}

    def interrupt_after(kind: str, request: ChatRequest) -> None:
        if last_user(request) == "one 1":
            holder["runner"].interrupt()

    holder["runner"] = Runner(Counting(interrupt_after), options(tmp_path, concurrency=1))
    holder["runner"].run(plans(tmp_path, THREE_TURNS))
    edited = THREE_TURNS.replace('"one {{ n }}"', '"uno {{ n }}"')
    second = Counting()
    Runner(second, options(tmp_path, concurrency=1, resume=True)).run(plans(tmp_path, edited))
    assert second.calls["uno 1"] == 1 and second.calls["two 1"] == 1  # sent afresh


@pytest.mark.timeout(20)
def test_a_second_interrupt_saves_the_pending_task_and_resume_polls_it_instead_of_resubmitting(
    tmp_path: Path,
) -> None:
    holder: dict[str, Runner] = {}

    def abandon_on_third_poll(kind: str, request: ChatRequest) -> None:
        if kind == "poll" and backend.polls["task-1"] == 3:
            assert holder["runner"].interrupt()  # the first: the task keeps being polled
            assert not holder["runner"].interrupt()  # the second abandons it

    backend = Counting(abandon_on_third_poll, async_polls=6)
    text = "model: m\nmessages: [{role: user, content: q}]\nturns: [again]\n"
    p = plans(tmp_path, text, mode_override="async")
    holder["runner"] = Runner(backend, options(tmp_path))
    summary = holder["runner"].run(p)
    assert summary.interrupted and summary.finished == 0
    saved = json.loads((tmp_path / "out" / resume.FOLDER / "c.json").read_text("utf-8"))
    assert saved["answered"] == [] and saved["pending"]["task_id"] == "task-1"

    summary = Runner(backend, options(tmp_path, resume=True)).run(p)  # same server, same tasks
    assert summary.exit_code == 0
    assert backend.submits == Counter({"q": 1, "again": 1})  # never submitted twice
    assert backend.polls == Counter({"task-1": 6, "task-2": 6})  # polled to their end, once
    (t,) = transcripts(tmp_path / "out").values()
    assert [c["task_id"] for c in t["calls"]] == ["task-1", "task-2"]


ASYNC_THREE = """
    model: m
    messages: [{role: user, content: "q {{ n }}"}]
    cases: [{n: 1}, {n: 2}, {n: 3}]
"""


def blocked_until_two_wait(holder: dict[str, Runner], then: Callable[[], None]) -> Callable[
        [str, ChatRequest], None]:
    """A hook: the first submit holds the only slot until both other conversations wait for
    it, then runs `then` (an interrupt, a fatal error) and goes on."""
    done = threading.Event()

    def hook(kind: str, request: ChatRequest) -> None:
        if kind == "submit" and not done.is_set():
            done.set()
            limiter = holder["runner"].limiter
            while limiter.waiting < 2:
                threading.Event().wait(0.005)
            then()

    return hook


@pytest.mark.timeout(20)
def test_after_an_interrupt_nobody_waiting_for_a_slot_sends_and_submitted_tasks_finish(
    tmp_path: Path,
) -> None:
    holder: dict[str, Runner] = {}
    backend = Counting(blocked_until_two_wait(holder, lambda: holder["runner"].interrupt()),
                       async_polls=3)
    holder["runner"] = Runner(backend, options(tmp_path, concurrency=1, rpm=1000))
    p = plans(tmp_path, ASYNC_THREE, mode_override="async")
    summary = holder["runner"].run(p)
    assert sum(backend.submits.values()) == 1
    assert backend.polls == Counter({"task-1": 3})  # the submitted task was polled to its end
    assert summary.statuses() == {"c--case1": "passed"} and summary.not_started == 2
    # --rpm counted each request when it was sent, never one still waiting for a slot
    assert holder["runner"].caps.counted() == backend.requests == 4


@pytest.mark.timeout(20)
def test_after_a_fatal_error_nobody_waiting_for_a_slot_sends(tmp_path: Path) -> None:
    holder: dict[str, Runner] = {}

    def fatal() -> None:
        raise errors.AuthError("身份验证失败。", status=401, code="1000")

    backend = Counting(blocked_until_two_wait(holder, fatal))
    holder["runner"] = Runner(backend, options(tmp_path, concurrency=1))
    summary = holder["runner"].run(plans(tmp_path, ASYNC_THREE, mode_override="async"))
    assert sum(backend.submits.values()) == 1
    assert isinstance(summary.fatal, errors.AuthError) and summary.exit_code == 3
    errs = {t["id"]: t["error"]["message"] for t in transcripts(tmp_path / "out").values()}
    # the two that waited for a slot sent nothing: not run, no transcript (--resume runs them)
    assert errs == {"c--case1": "身份验证失败。"}
    assert summary.not_started == 2


@pytest.mark.timeout(20)
def test_after_a_fatal_error_a_submitted_async_task_is_said_to_be_abandoned_not_unstarted(
    tmp_path: Path,
) -> None:
    holder: dict[str, Runner] = {}
    polled = threading.Event()

    def fatal_while_task_1_polls(kind: str, request: ChatRequest) -> None:
        if kind == "poll" and not polled.is_set():  # task-1 is submitted and being polled
            polled.set()
            assert holder["runner"].stop.wait(10)  # ... until the other one's fatal error
        if kind == "submit" and last_user(request) == "q 2":
            assert polled.wait(10)
            raise errors.AuthError("身份验证失败。", status=401, code="1000")

    backend = Counting(fatal_while_task_1_polls, async_polls=5)
    text = 'model: m\nmessages: [{role: user, content: "q {{ n }}"}]\ncases: [{n: 1}, {n: 2}]\n'
    holder["runner"] = Runner(backend, options(tmp_path, concurrency=2))
    summary = holder["runner"].run(plans(tmp_path, text, mode_override="async"))
    assert summary.exit_code == 3 and backend.polls == Counter({"task-1": 1})
    errs = {t["id"]: t["error"] for t in transcripts(tmp_path / "out").values()}
    assert errs["c--case2"]["message"] == "身份验证失败。"
    assert errs["c--case1"]["message"] == (
        "async task task-1 was submitted, then no longer polled: the run stopped after: "
        "身份验证失败。 (HTTP 401, code 1000)")


@pytest.mark.timeout(20)
def test_a_worker_stuck_past_the_grace_period_adds_nothing_after_run_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_module, "ABANDON_JOIN_S", 0.05)
    entered, release = threading.Event(), threading.Event()
    holder: dict[str, Runner] = {}

    def stuck(kind: str, request: ChatRequest) -> None:  # like a hook that ignores everything
        holder["runner"].interrupt()
        entered.set()
        release.wait(10)

    backend = Counting(stuck)
    holder["runner"] = Runner(backend, options(tmp_path, grace_s=0.05))
    one = "model: m\nmessages: [{role: user, content: q}]\n"
    summary = holder["runner"].run(plans(tmp_path, one))
    assert entered.is_set()
    reported = (summary.finished, summary.not_started, dict(summary.tallies))
    assert reported == (0, 1, {})
    release.set()  # the worker now finishes its conversation, after run() has reported
    for thread in threading.enumerate():
        if thread.name.startswith("glmrun-") and thread.name != "glmrun-writer":
            thread.join(5)
    assert (summary.finished, summary.not_started, dict(summary.tallies)) == reported
    assert transcripts(tmp_path / "out") == {}  # never half-reported: --resume runs it


USER_CODE = '''
import sys

def exits(reply, context):
    sys.exit(3)

def ctrl_c(reply, context):
    raise KeyboardInterrupt

def tool_ctrl_c(city):
    raise KeyboardInterrupt("no more")
'''


@pytest.mark.timeout(20)
def test_user_code_that_exits_ends_only_its_own_check_or_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    thread_errors: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "user.py").write_text(USER_CODE, encoding="utf-8")
    (suite / "quits_on_import.py").write_text("import sys\nsys.exit('bye')\n", "utf-8")
    text = """
        model: m
        messages: [{role: user, content: hi}]
        params:
          tools:
            - type: function
              function: {name: weather, parameters: {type: object}}
              respond: {python: "user:tool_ctrl_c"}
        conversations:
          - {name: exits, expect: [{python: "user:exits"}]}
          - {name: ctrl-c, expect: [{python: "user:ctrl_c"}]}
          - {name: import-exits, expect: [{python: "quits_on_import:f"}]}
          - {name: tool, messages: [{role: user, content: "use the tool"}]}
          - {name: fine, expect: [{contains: hi}]}
    """
    tool_call = Reply(content="", finish_reason="tool_calls", tool_calls=(
        ToolCall(id="call_1", name="weather", arguments='{"city": "x"}'),))

    def answer(request: ChatRequest) -> Reply:
        if last_user(request) == "use the tool" and request.messages[-1]["role"] == "user":
            return tool_call
        return text_reply(f"echo: {last_user(request)}")

    summary = Runner(ScriptedBackend(default=answer), options(tmp_path, concurrency=2)).run(
        plans(suite, text))
    assert thread_errors == []
    assert summary.not_started == 0 and summary.finished == 5
    t = transcripts(tmp_path / "out")
    reasons = {name: [e["reason"] for e in t[f"c--{name}"]["expectations"]]
               for name in ("exits", "ctrl-c", "import-exits")}
    assert reasons == {
        "exits": ["python check user:exits raised SystemExit: 3"],
        "ctrl-c": ["python check user:ctrl_c raised KeyboardInterrupt"],
        "import-exits": ["python check quits_on_import:f could not be loaded: importing "
                         "'quits_on_import' failed: SystemExit: bye"],
    }
    assert {n: t[f"c--{n}"]["status"] for n in reasons} == dict.fromkeys(reasons, "failed")
    (tool,) = t["c--tool"]["tool_results"]
    assert tool["error"] == "user:tool_ctrl_c raised KeyboardInterrupt: no more"
    assert t["c--tool"]["status"] == "passed" and t["c--fine"]["status"] == "passed"


@pytest.mark.timeout(20)
def test_a_deadline_also_bounds_the_wait_for_a_request_slot(tmp_path: Path) -> None:
    release = threading.Event()

    def hold_the_slot(kind: str, request: ChatRequest) -> None:
        if last_user(request) == "q 1":
            release.wait(10)  # the other conversation's deadline passes meanwhile

    class ReleaseAfterCase2(runner_module.NullReporter):
        def conversation_finished(self, row: Any, transcript: Any) -> None:
            if row.id == "c--case2":
                release.set()

    reporter = ReleaseAfterCase2()
    backend = Counting(hold_the_slot)
    two = "model: m\nmessages: [{role: user, content: 'q {{ n }}'}]\ncases: [{n: 1}, {n: 2}]\n"
    runner = Runner(backend, options(tmp_path, concurrency=1, deadline_s=0.3), reporter)
    summary = runner.run(plans(tmp_path, two, mode_override="async"))
    assert summary.statuses() == {"c--case1": "error", "c--case2": "error"}
    t = transcripts(tmp_path / "out")
    assert t["c--case2"]["error"]["kind"] == "deadline"
    assert backend.submits == Counter({"q 1": 1})  # case 2 never got a slot: nothing sent
