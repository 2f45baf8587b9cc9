"""The runner with a scripted backend and a fake clock: turns, tools, retries, stops, resume."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fixtures.clock import FakeClock

from glmrun import errors
from glmrun.backends.base import RequestIdentity
from glmrun.backends.scripted import ScriptedBackend, text_reply
from glmrun.load.spec import load_file
from glmrun.plan.plans import RunPlan, plan_runs
from glmrun.run.limits import PollPolicy, RetryPolicy
from glmrun.run.options import RunOptions
from glmrun.run.runner import Runner
from glmrun.types import Reply, ToolCall, Usage


def plans(tmp_path: Path, text: str, name: str = "c.yaml", **kw: Any) -> list[RunPlan]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return plan_runs([load_file(path)], **kw)


def run(
    tmp_path: Path,
    plan_list: list[RunPlan],
    backend: ScriptedBackend,
    clock: FakeClock | None = None,
    **opts: Any,
) -> tuple[Any, dict[str, dict[str, Any]]]:
    clock = clock or FakeClock()
    out = tmp_path / "out"
    options = RunOptions(out_dir=out, formats=("json",), seed=1, **opts)
    runner = Runner(backend, options, sleep=clock.sleep, clock=clock)
    summary = runner.run(plan_list)
    transcripts = {p.stem: json.loads(p.read_text("utf-8")) for p in out.glob("*.json")}
    return summary, transcripts


SIMPLE = """
    model: glm-4-flash
    vars: {user: Ann}
    messages:
      - {role: system, content: be brief}
      - {role: user, content: "hi {{ user }}"}
    turns:
      - content: "again {{ user }}"
        expect: [{contains: "again Ann"}]
"""


def test_turns_grow_the_history_and_each_request_is_exact(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    summary, ts = run(tmp_path, plans(tmp_path, SIMPLE), backend)
    assert summary.exit_code == 0
    first, second = backend.history
    assert list(first.messages) == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi Ann"}]
    assert list(second.messages) == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi Ann"},
        {"role": "assistant", "content": "echo: hi Ann"}, {"role": "user", "content": "again Ann"}]
    t = ts["c"]
    assert t["status"] == "passed"
    assert [m["content"] for m in t["messages"]] == [
        "be brief", "hi Ann", "echo: hi Ann", "again Ann", "echo: again Ann"]
    assert [(c["turn"], c["round"]) for c in t["calls"]] == [(0, 0), (1, 0)]
    assert t["expectations"][0]["passed"] and t["expectations"][0]["turn"] == 1
    assert t["usage"]["total_tokens"] == sum(c["usage"]["total_tokens"] for c in t["calls"])


def test_failed_expectation_fails_the_conversation_not_the_run(tmp_path: Path) -> None:
    backend = ScriptedBackend(default=lambda r: text_reply("nope"))
    summary, ts = run(tmp_path, plans(tmp_path, SIMPLE), backend)
    assert summary.exit_code == 1
    assert ts["c"]["status"] == "failed"
    assert ts["c"]["expectations"][0]["reason"].startswith("expected reply to contain 'again Ann'")


TOOLS = """
    model: glm-4-flash
    vars: {unit: C}
    params:
      tools:
        - type: function
          function: {name: get_weather, parameters: {type: object}}
          respond: {result: "{{ args.city }}: 20{{ unit }}"}
        - type: function
          function: {name: lookup, parameters: {type: object}}
          respond:
            cases:
              - {when: {id: 1}, result: {name: one}}
            default: unknown
    messages:
      - {role: user, content: weather?}
    expect:
      - {tool_call: get_weather, arguments: {city: 北京}}
"""


def call(name: str, args: str, i: int = 1) -> ToolCall:
    return ToolCall(id=f"call_{i}", name=name, arguments=args)


def test_tool_rounds_loop_until_a_reply_without_calls(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    backend.enqueue(
        Reply(content=None, finish_reason="tool_calls", tool_calls=(
            call("get_weather", '{"city": "北京"}', 1), call("lookup", '{"id": 1}', 2))),
        Reply(content=None, finish_reason="tool_calls",
              tool_calls=(call("lookup", '{"id": 9}', 3),)),
        text_reply("done"),
    )
    _summary, ts = run(tmp_path, plans(tmp_path, TOOLS), backend)
    t = ts["c"]
    assert t["status"] == "passed", t["expectations"]
    assert [(r["name"], r["result"], r["error"]) for r in t["tool_results"]] == [
        ("get_weather", "北京: 20C", None), ("lookup", '{"name": "one"}', None),
        ("lookup", "unknown", None)]
    assert [(c["turn"], c["round"]) for c in t["calls"]] == [(0, 0), (0, 1), (0, 2)]
    sent = backend.history[1]
    assert sent.messages[-2:] == (
        {"role": "tool", "tool_call_id": "call_1", "content": "北京: 20C"},
        {"role": "tool", "tool_call_id": "call_2", "content": '{"name": "one"}'})
    assert "respond" not in json.dumps(sent.params)  # glmrun-only keys never go on the wire


@pytest.mark.parametrize(("bad_call", "error"), [
    (call("get_weather", '{"city": '), "arguments are not valid JSON"),
    (call("no_such_tool", "{}"), "unknown function 'no_such_tool'"),
    (call("get_weather", "[1]"), "arguments must be a JSON object"),
])
def test_tool_errors_go_back_to_the_model_never_crash(
    tmp_path: Path, bad_call: ToolCall, error: str
) -> None:
    backend = ScriptedBackend()
    backend.enqueue(Reply(content=None, finish_reason="tool_calls", tool_calls=(bad_call,)),
                    text_reply("sorry"))
    _, ts = run(tmp_path, plans(tmp_path, TOOLS), backend)
    result = ts["c"]["tool_results"][0]
    assert error in result["error"] and result["result"] is None
    tool_msg = backend.history[1].messages[-1]
    assert tool_msg["role"] == "tool" and error in json.loads(tool_msg["content"])["error"]


def test_python_tool_callable_and_its_exception(tmp_path: Path) -> None:
    (tmp_path / "hooks.py").write_text(
        "def add(a, b):\n    return {'sum': a + b}\n\n"
        "def boom(**kw):\n    raise ValueError('no')\n")
    text = """
        model: m
        params:
          tools:
            - {type: function, function: {name: add}, respond: {python: "hooks:add"}}
            - {type: function, function: {name: boom}, respond: {python: "hooks:boom"}}
        messages: [{role: user, content: go}]
    """
    backend = ScriptedBackend()
    backend.enqueue(Reply(content=None, finish_reason="tool_calls", tool_calls=(
        call("add", '{"a": 2, "b": 3}', 1), call("boom", "{}", 2))), text_reply("ok"))
    _, ts = run(tmp_path, plans(tmp_path, text), backend)
    results = ts["c"]["tool_results"]
    assert results[0]["result"] == '{"sum": 5}'
    assert results[1]["error"] == "hooks:boom raised ValueError: no"


def test_max_tool_rounds_ends_the_conversation_as_an_error(tmp_path: Path) -> None:
    text = TOOLS.replace("model: glm-4-flash", "model: glm-4-flash\n    max_tool_rounds: 2")
    backend = ScriptedBackend(default=lambda r: Reply(
        content=None, finish_reason="tool_calls", tool_calls=(call("lookup", "{}"),)))
    summary, ts = run(tmp_path, plans(tmp_path, text), backend)
    assert ts["c"]["status"] == "error" and ts["c"]["error"] == {  # glmrun's own, not the API's
        "kind": "tool_rounds", "status": None, "code": None,
        "message": "the model still called tools after max_tool_rounds=2"}
    assert len(backend.history) == 3 and summary.exit_code == 3


ONE = "model: m\nmessages: [{role: user, content: hi}]\n"


def test_retry_then_success_records_every_retry(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    backend.enqueue(errors.ServerError("down", status=500, code="500"),
                    errors.RateLimitError("busy", status=429, code="1302", retry_after=3))
    clock = FakeClock()
    summary, ts = run(tmp_path, plans(tmp_path, ONE), backend, clock,
                      retry=RetryPolicy(retries=3, base_s=0.5, jitter=False))
    t = ts["c"]
    assert t["status"] == "passed" and summary.exit_code == 0
    retries = t["calls"][0]["retries"]
    assert [(r["attempt"], r["error"]["kind"], r["error"]["code"]) for r in retries] == [
        (1, "server", "500"), (2, "rate_limit", "1302")]
    assert [r["wait_ms"] for r in retries] == [500.0, 3000.0]  # Retry-After honoured
    assert clock.slept == [0.5, 3.0]


def test_retries_give_up_after_the_limit(tmp_path: Path) -> None:
    backend = ScriptedBackend(default=lambda r: (_ for _ in ()).throw(errors.ServerError("x")))
    summary, ts = run(tmp_path, plans(tmp_path, ONE), backend, retry=RetryPolicy(retries=2))
    assert ts["c"]["status"] == "error" and len(ts["c"]["calls"][0]["retries"]) == 2
    assert len(backend.history) == 3 and summary.exit_code == 3


def test_non_retryable_codes_end_the_conversation_with_the_code(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    backend.enqueue(errors.ContentFilterError("敏感内容", status=400, code="1301"))
    _summary, ts = run(tmp_path, plans(tmp_path, ONE), backend)
    assert ts["c"]["error"] == {"kind": "content_filter", "message": "敏感内容", "status": 400,
                                "code": "1301"}
    assert ts["c"]["calls"][0]["retries"] == [] and len(backend.history) == 1


SUITE = """
    model: m
    messages: [{role: user, content: "hi {{ n }}"}]
    cases: [{n: 1}, {n: 2}, {n: 3}, {n: 4}, {n: 5}]
"""


def test_auth_failure_stops_the_whole_run(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    backend.enqueue(errors.AuthError("bad key", status=401, code="1000"))
    summary, ts = run(tmp_path, plans(tmp_path, SUITE), backend, concurrency=1)
    assert len(backend.history) == 1  # nothing else was sent
    assert summary.fatal is not None and summary.exit_code == 3
    assert summary.not_started == 4 and list(ts) == ["c--case1"]


def test_resume_skips_finished_conversations_and_reruns_errors(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    backend.enqueue(text_reply("a"), errors.BadRequestError("bad", status=400, code="1214"))
    p = plans(tmp_path, SUITE)
    summary, _ = run(tmp_path, p, backend, concurrency=1)
    assert summary.count("error") == 1 and len(backend.history) == 5
    again = ScriptedBackend()
    summary, ts = run(tmp_path, p, again, concurrency=1, resume=True)
    assert summary.skipped == 4 and len(again.history) == 1
    assert again.history[0].messages[0]["content"] == "hi 2"
    assert all(t["status"] == "passed" for t in ts.values()) and summary.exit_code == 0


def test_the_summary_keeps_ids_of_what_passed_and_rows_of_the_rest(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    backend.enqueue(text_reply("a"), errors.BadRequestError("bad", status=400, code="1214"))
    p = plans(tmp_path, SUITE)
    summary, ts = run(tmp_path, p, backend, concurrency=1)
    ids = sorted(ts)
    assert summary.passed_ids == [i for i in ids if ts[i]["status"] == "passed"]
    assert [(r.id, r.status) for r in summary.rows] == [
        (i, "error") for i in ids if ts[i]["status"] == "error"]
    assert all(any(i is q.id for q in p) for i in summary.passed_ids)  # shared, not copied
    assert summary.finished_ids() == ids
    assert summary.statuses() == {i: t["status"] for i, t in ts.items()}
    assert summary.count("passed") == 4 and summary.finished == 5 and summary.not_started == 0
    assert summary.tokens == sum(t["usage"]["total_tokens"] for t in ts.values())
    resumed, _ = run(tmp_path, p, ScriptedBackend(), concurrency=1, resume=True)
    assert resumed.skipped == 4 and resumed.statuses() == dict.fromkeys(ids, "passed")
    assert resumed.rows == [] and resumed.tokens > summary.tokens > 0


def test_a_run_sweeps_the_temp_files_a_killed_run_left(tmp_path: Path) -> None:
    from fixtures.procs import dead_pid

    out = tmp_path / "out"
    out.mkdir()
    (out / f".c.json.{dead_pid()}-5.tmp").write_text('{"id": "c", "sta', "utf-8")
    run(tmp_path, plans(tmp_path, ONE), ScriptedBackend(), resume=True)
    assert sorted(p.name for p in out.iterdir()) == ["c.json"]


def test_a_disk_that_fills_up_stops_the_run_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import threading

    import glmrun.output.writer as tx
    from glmrun.output.progress import render_summary

    real, written, tried = tx.write_atomically, [], threading.Semaphore(0)

    def write(path: Any, chunks: Any, *, durable: bool = True) -> None:
        try:
            if len(written) >= 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            written.append(path)
            real(path, chunks, durable=durable)
        finally:
            tried.release()

    def reply(request: Any) -> Reply:
        # each call waits until the writer has tried the transcript before it: the test
        # does not depend on how fast the writer thread is
        if len(backend.history) > 1:
            assert tried.acquire(timeout=10)
        return text_reply("ok")

    crashes: list[Any] = []
    monkeypatch.setattr(tx, "write_atomically", write)
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    text = "model: m\nmessages: [{role: user, content: 'hi {{ n }}'}]\n" \
           f"cases: [{', '.join(f'{{n: {i}}}' for i in range(10))}]\n"
    backend = ScriptedBackend(default=reply)
    summary, ts = run(tmp_path, plans(tmp_path, text), backend, concurrency=1)
    assert isinstance(summary.fatal, errors.OutputError) and summary.exit_code == 3
    assert "No space left on device" in str(summary.fatal) and "--resume" in str(summary.fatal)
    assert "stopped: cannot write transcripts to " in render_summary(summary)
    # the 3rd transcript failed; the 4th conversation learnt it when it ended: none after it
    assert len(ts) == 2 and len(backend.history) == 4
    assert summary.not_started == 10 - summary.finished > 0
    assert crashes == []  # no worker died of it


def test_a_transcript_folder_that_cannot_be_made_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x", "utf-8")
    options = RunOptions(out_dir=tmp_path / "file" / "out", formats=("json",))
    with pytest.raises(errors.InputError,
                       match=r"cannot create the transcript folder .*file/out: Not a directory"):
        Runner(ScriptedBackend(), options).run(plans(tmp_path, ONE))


def test_async_mode_polls_with_backoff_and_records_the_task(tmp_path: Path) -> None:
    backend = ScriptedBackend(async_polls=3)
    clock = FakeClock()
    p = plans(tmp_path, ONE, mode_override="async")
    _, ts = run(tmp_path, p, backend, clock, poll=PollPolicy(start_s=1, factor=2, ceiling_s=3))
    c = ts["c"]["calls"][0]
    assert ts["c"]["status"] == "passed" and c["task_id"] == "task-1" and c["polls"] == 3
    assert clock.slept == [1, 2, 3]
    assert c["endpoint"] == "POST /async/chat/completions, then GET /async-result/{id}"
    assert c["queue_ms"] == 6000.0


def test_async_task_that_never_finishes_times_out(tmp_path: Path) -> None:
    backend = ScriptedBackend(async_polls=10**6)
    p = plans(tmp_path, ONE, mode_override="async")
    summary, ts = run(tmp_path, p, backend, poll=PollPolicy(start_s=1, factor=1, timeout_s=5))
    assert ts["c"]["error"]["kind"] == "task_timeout"
    assert "task-1 did not finish within 5 s" in ts["c"]["error"]["message"]
    assert summary.exit_code == 3


def test_async_polling_without_a_timeout_waits_for_the_task(tmp_path: Path) -> None:
    """PollPolicy(timeout_s=None), as batches are watched: as long as the task takes."""
    backend = ScriptedBackend(async_polls=900)
    clock = FakeClock()
    p = plans(tmp_path, ONE, mode_override="async")
    _, ts = run(tmp_path, p, backend, clock,
                poll=PollPolicy(start_s=1, factor=1, ceiling_s=1, timeout_s=None))
    assert ts["c"]["status"] == "passed" and ts["c"]["calls"][0]["polls"] == 900
    assert sum(clock.slept) == 900  # past the default timeout of 600 s


def test_async_fail_is_an_error_with_the_task_id(tmp_path: Path) -> None:
    backend = ScriptedBackend(async_polls=1)
    failed = errors.TaskFailedError("async task task-1 ended with task_status=FAIL")
    backend.enqueue(failed)
    p = plans(tmp_path, ONE, mode_override="async")
    _, ts = run(tmp_path, p, backend)
    assert ts["c"]["error"]["kind"] == "task_failed"
    assert ts["c"]["error"]["message"] == (
        "async task task-1 ended with task_status=FAIL after 1 polls")
    assert ts["c"]["calls"][0]["task_id"] == "task-1" and ts["c"]["calls"][0]["polls"] == 1
    # what the backend raised is not changed after the fact: the runner raised a new error
    assert (failed.message, failed.task_id, failed.polls) == (
        "async task task-1 ended with task_status=FAIL", None, None)


def test_deadline_stops_retrying(tmp_path: Path) -> None:
    backend = ScriptedBackend(default=lambda r: (_ for _ in ()).throw(errors.ServerError("x")))
    _, ts = run(tmp_path, plans(tmp_path, ONE), backend, deadline_s=2.0,
                retry=RetryPolicy(retries=50, base_s=1, factor=1, jitter=False))
    assert ts["c"]["status"] == "error" and len(backend.history) <= 3


def test_repeats_pass_by_rate(tmp_path: Path) -> None:
    text = "model: m\nrepeat: 4\npass_rate: 0.5\nmessages: [{role: user, content: hi}]\n" \
           "expect: [{contains: good}]\n"
    backend = ScriptedBackend()
    backend.enqueue(text_reply("good"), text_reply("no"), text_reply("good"), text_reply("no"))
    summary, ts = run(tmp_path, plans(tmp_path, text), backend, concurrency=1)
    assert sorted(ts) == ["c--r1", "c--r2", "c--r3", "c--r4"]
    assert summary.count("failed") == 2 and summary.exit_code == 0
    backend.enqueue(text_reply("good"), text_reply("no"), text_reply("no"), text_reply("no"))
    summary, _ = run(tmp_path, plans(tmp_path, text), backend, concurrency=1)
    assert summary.failed_groups() == ["c"] and summary.exit_code == 1
    assert summary.passed_ids == [] and len(summary.rows) == 4  # a group is judged whole


def test_stream_deltas_reach_the_reporter(tmp_path: Path) -> None:
    seen: list[str] = []

    class Rep:
        def __getattr__(self, name: str) -> Any:
            return lambda *a, **k: seen.append(a[1].content) if name == "delta" else None

    backend = ScriptedBackend(default=lambda r: text_reply("abc"))
    options = RunOptions(out_dir=tmp_path / "o", formats=("json",))
    Runner(backend, options, Rep()).run(plans(tmp_path, ONE, mode_override="stream"))  # type: ignore[arg-type]
    assert seen == ["a", "b", "c"]


def test_usage_adds_up() -> None:
    assert Usage(1, 2, 3) + Usage(10, 20, 30) == Usage(11, 22, 33)


def test_judge_expectation_asks_a_model_and_records_its_verdict(tmp_path: Path) -> None:
    text = """
        model: glm-4-flash
        messages: [{role: user, content: "be polite"}]
        expect:
          - {judge: "The reply is polite.", model: glm-4-plus}
    """
    backend = ScriptedBackend()
    backend.enqueue(text_reply("Thank you kindly!"),
                    text_reply('{"pass": false, "reason": "too formal"}'))
    summary, ts = run(tmp_path, plans(tmp_path, text), backend)
    judge_request = backend.history[1]
    assert judge_request.model == "glm-4-plus"
    assert "The reply is polite." in json.dumps(judge_request.messages, ensure_ascii=False)
    assert "Thank you kindly!" in json.dumps(judge_request.messages, ensure_ascii=False)
    (result,) = ts["c"]["expectations"]
    assert (result["kind"], result["passed"], result["reason"]) == (
        "judge", False, "judge: too formal")
    assert summary.exit_code == 1


def test_each_request_reaches_the_backend_with_its_run_and_call_number(tmp_path: Path) -> None:
    """Tool rounds, a retry, the next turn and the judge: calls 0..3 of run c, a retry being the
    same call again."""
    text = """
        model: glm-4-flash
        params:
          tools:
            - type: function
              function: {name: get_weather, parameters: {type: object}}
              respond: {result: sunny}
        messages: [{role: user, content: weather?}]
        turns:
          - content: thanks
            expect: [{judge: "The reply is polite."}]
    """
    backend = ScriptedBackend()
    backend.enqueue(
        Reply(content=None, finish_reason="tool_calls", tool_calls=(call("get_weather", "{}"),)),
        errors.ServerError("down", status=500, code="500"), text_reply("sunny today"),
        text_reply("you are welcome"), text_reply('{"pass": true, "reason": "polite"}'))
    summary, ts = run(tmp_path, plans(tmp_path, text), backend,
                      retry=RetryPolicy(retries=1, jitter=False))
    assert summary.exit_code == 0, ts["c"]["error"]
    assert backend.identities == [RequestIdentity("c", n) for n in (0, 1, 1, 2, 3)]
    assert [(c["turn"], c["round"]) for c in ts["c"]["calls"]] == [(0, 0), (0, 1), (1, 0)]


def test_concurrent_runs_each_send_under_their_own_identity(tmp_path: Path) -> None:
    text = """
        model: glm-4-flash
        messages: [{role: user, content: "case {{ n }}"}]
        turns: ["more {{ n }}"]
        cases: [{n: 1}, {n: 2}, {n: 3}, {n: 4}, {n: 5}, {n: 6}, {n: 7}, {n: 8}, {n: 9}]
    """
    backend = ScriptedBackend()
    summary, _ts = run(tmp_path, plans(tmp_path, text), backend, concurrency=8)
    assert summary.exit_code == 0
    sent = sorted((i.run_id, i.call, r.messages[-1]["content"])
                  for r, i in zip(backend.history, backend.identities, strict=True))
    assert sent == sorted(x for n in range(1, 10) for x in (
        (f"c--case{n}", 0, f"case {n}"), (f"c--case{n}", 1, f"more {n}")))


@pytest.mark.parametrize(("adaptive", "width"), [(True, 2), (False, 4)])
def test_a_gate_that_is_not_adaptive_keeps_its_width_through_rate_limits(
    tmp_path: Path, adaptive: bool, width: int,
) -> None:
    """RunOptions(adaptive=False), as batch mode runs: a 429 does not narrow the gate."""
    backend = ScriptedBackend()
    backend.enqueue(errors.RateLimitError("busy", status=429, code="1303"))
    clock = FakeClock()
    options = RunOptions(out_dir=tmp_path / "out", formats=("json",), concurrency=4,
                         adaptive=adaptive, retry=RetryPolicy(retries=1, jitter=False))
    runner = Runner(backend, options, sleep=clock.sleep, clock=clock)
    summary = runner.run(plans(tmp_path, ONE))
    assert summary.exit_code == 0
    assert clock.slept == [0.5]  # the 429 was retried
    assert runner.limiter.width == width


def test_a_bug_costs_one_conversation_never_the_run(tmp_path: Path) -> None:
    def responder(request: Any) -> Reply:
        if "boom" in json.dumps(request.messages):
            raise KeyError("surprise")
        return text_reply("fine")

    text = 'model: m\nmessages: [{role: user, content: "{{ t }}"}]\ncases: [{t: boom}, {t: ok}]\n'
    summary, ts = run(tmp_path, plans(tmp_path, text), ScriptedBackend(default=responder),
                      concurrency=1)
    assert ts["c--case1"]["error"]["kind"] == "internal"
    assert ts["c--case1"]["error"]["message"] == "internal error: KeyError: 'surprise'"
    assert ts["c--case2"]["status"] == "passed" and summary.exit_code == 3


def test_the_run_sends_what_planning_rendered_and_renders_nothing_again(tmp_path: Path) -> None:
    png = (  # a PNG header of 1 x 1 pixels
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01" + b"\x00" * 40)
    (tmp_path / "cat.png").write_bytes(png)
    text = """
        model: m
        messages:
          - role: user
            content: [{type: image_url, image_url: {url: cat.png}}]
        cases: [{n: 1}, {n: 2}]
    """
    p = plans(tmp_path, text)
    (tmp_path / "cat.png").unlink()  # gone between planning and the run: nothing reads it again
    backend = ScriptedBackend()
    summary, _ = run(tmp_path, p, backend, concurrency=1)
    assert summary.count("passed") == 2 and summary.exit_code == 0
    sent = [r.messages[0]["content"][0]["image_url"]["url"] for r in backend.history]
    assert sent == [base64.b64encode(png).decode("ascii")] * 2
