"""Issue 3 end to end: sync, stream and async from the YAML file to the transcript.

Everything runs through the CLI and the real zhipuai SDK against the emulator on loopback.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import (
    FIXTURES,
    KEY,
    REPO,
    async_bodies,
    chat_bodies,
    glmrun,
    polled_tasks,
    run,
    transcripts,
    write,
)

from glmrun import api as session
from glmrun.mock import GREETING_REPLY, MockConfig, MockServer
from glmrun.mock.errors import STREAM_ERROR
from glmrun.mock.wire import split_text
from glmrun.output.progress import ConsoleReporter
from glmrun.run.options import RunOptions

MODES_DIR = FIXTURES / "modes"
ASYNC_ENDPOINT = "POST /async/chat/completions, then GET /async-result/{id}"
ENDPOINTS = {"sync": "POST /chat/completions", "stream": "POST /chat/completions (stream)",
             "async": ASYNC_ENDPOINT}
FEW_SHOT = [{"role": "system", "content": "你是一个友好的助手。"},
            {"role": "user", "content": "1+1=?"}, {"role": "assistant", "content": "2"},
            {"role": "user", "content": "你好"}]
CHAT_MESSAGES = [
    *FEW_SHOT,
    {"role": "assistant", "content": GREETING_REPLY},
    {"role": "user", "content": "我是小明，你还记得我吗？"},
    {"role": "assistant", "content": "Echo: 我是小明，你还记得我吗？ (6 messages)"},
    {"role": "user", "content": "谢谢，再见！"},
    {"role": "assistant", "content": "Echo: 谢谢，再见！ (8 messages)"},
]
THINK_REPLY_1 = '{"echo": "北京有多少人口？", "messages": 1}'
THINK_REPLY_2 = '{"echo": "上海呢？", "messages": 3}'
THINK_MESSAGES = [
    {"role": "user", "content": "北京有多少人口？"},
    {"role": "assistant", "content": THINK_REPLY_1,
     "reasoning_content": "Thinking about: 北京有多少人口？"},
    {"role": "user", "content": "上海呢？"},
    {"role": "assistant", "content": THINK_REPLY_2,
     "reasoning_content": "Thinking about: 上海呢？"},
]


def pieces(text: str) -> int:
    """How many content deltas the emulator streams for `text`."""
    return len(list(split_text(text)))


# -- the same conversation in every mode ---------------------------------------------------


@pytest.mark.parametrize(("name", "expected", "n_calls"), [("chat", CHAT_MESSAGES, 3),
                                                           ("think", THINK_MESSAGES, 2)])
@pytest.mark.slow
def test_every_mode_gives_the_same_messages_with_its_own_fields_filled(
    api: MockServer, tmp_path: Path, name: str, expected: list[dict[str, Any]], n_calls: int
) -> None:
    path = MODES_DIR / f"{name}.yaml"
    runs: dict[str, dict[str, Any]] = {}
    for mode in ("sync", "stream", "async"):
        api.requests.clear()
        out = tmp_path / mode
        result = run(api, path, out, "--mode", mode, "--chunk-times")
        assert result.exit_code == 0, result.output
        t = runs[mode] = transcripts(out)[name]
        assert t["mode"] == mode and t["status"] == "passed"
        assert all(e["passed"] for e in t["expectations"]) and t["expectations"]
        assert [c["endpoint"] for c in t["calls"]] == [ENDPOINTS[mode]] * len(t["calls"])
        assert [c["retries"] for c in t["calls"]] == [[]] * len(t["calls"])
        bodies = async_bodies(api) if mode == "async" else chat_bodies(api)
        assert len(bodies) == len(t["calls"]) == n_calls
        assert [b.get("stream") for b in bodies] == [True if mode == "stream" else None] * n_calls
        # Each request carries the history as sent: replies without their reasoning_content.
        assert bodies[-1]["messages"] == [
            {k: v for k, v in m.items() if k != "reasoning_content"} for m in expected[:-1]]
        for call in t["calls"]:
            if mode == "stream":
                chunks = pieces(call["reasoning_content"] or "") + pieces(call["content"]) + 1
                assert call["chunks"] == chunks > 1
                assert 0 < call["ttft_ms"] <= call["latency_ms"]
                offsets = call["chunk_offsets_ms"]
                assert len(offsets) == chunks and offsets == sorted(offsets)
                assert offsets[0] == call["ttft_ms"]
            else:
                assert (call["ttft_ms"], call["chunks"], call["chunk_offsets_ms"]) == (
                    None, None, None)
            if mode == "async":
                assert re.fullmatch(r"task-\d{6}", call["task_id"])
                # 2 PROCESSING answers, then SUCCESS; every poll is a GET for this task.
                assert call["polls"] == 3 == polled_tasks(api).count(call["task_id"])
                assert call["queue_ms"] > 0 and call["request_id"] == call["task_id"]
            else:
                assert (call["task_id"], call["polls"], call["queue_ms"]) == (None, None, None)
                assert re.fullmatch(r"chatcmpl-\d{6}", call["request_id"])
    assert runs["sync"]["messages"] == expected
    assert runs["stream"]["messages"] == expected
    assert runs["async"]["messages"] == expected
    usage = {m: [c["usage"] for c in t["calls"]] for m, t in runs.items()}
    assert usage["sync"] == usage["stream"] == usage["async"]


def test_async_tasks_are_all_submitted_before_any_is_polled(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "many.yaml", """
        model: glm-4-flash
        mode: async
        messages: [{role: user, content: "q{{ n }}"}]
        cases: [{n: 1}, {n: 2}, {n: 3}, {n: 4}, {n: 5}, {n: 6}]
    """)
    result = run(api, path, tmp_path / "out", "-j", "1", "--poll-interval", "0.2")
    assert result.exit_code == 0, result.output
    submits = [r.at for r in api.requests if r.method == "POST"]
    polls = [r.at for r in api.requests if r.method == "GET"]
    assert len(submits) == 6 and len(polls) == 18
    assert max(submits) < min(polls)
    ts = transcripts(tmp_path / "out")
    assert sorted(t["messages"][-1]["content"] for t in ts.values()) == [
        f"Echo: q{n} (1 messages)" for n in range(1, 7)]


def test_async_polls_back_off_up_to_the_ceiling(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "slow.yaml", """
        model: glm-4-flash
        mode: async
        messages: [{role: user, content: "慢慢来 [[async_polls:4]]"}]
    """)
    result = run(api, path, tmp_path / "out", "--poll-interval", "0.05", "--poll-factor", "3",
                 "--poll-max", "0.15")
    assert result.exit_code == 0, result.output
    polls = [r.at for r in api.requests if r.method == "GET"]
    assert len(polls) == 5 == transcripts(tmp_path / "out")["slow"]["calls"][0]["polls"]
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    # waits 0.05 before the first poll, then 0.15 and capped there (uncapped: 0.45, 1.35, 4.05)
    assert all(g >= 0.14 for g in gaps)
    assert max(gaps) < 0.4


@pytest.mark.slow
def test_async_polls_start_fast_against_the_emulator_unless_told_otherwise(
    api: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policies: list[Any] = []
    real = session.run_plans

    def spy(plans: Any, settings: Any, options: RunOptions, *args: Any, **kw: Any) -> Any:
        policies.append(options.poll)
        return real(plans, settings, options, *args, **kw)

    monkeypatch.setattr(session, "run_plans", spy)
    async_file = REPO / "convos" / "async.yaml"
    assert glmrun(async_file, "--mock", "-o", tmp_path / "a").exit_code == 0
    assert glmrun(async_file, "--mock", "-o", tmp_path / "b", "--poll-interval", "0.03",
                  "--poll-max", "0.04").exit_code == 0
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)  # a real-API run (sync: nothing is polled)
    greeting = REPO / "convos" / "greeting.yaml"
    assert glmrun(greeting, "--base-url", api.base_url, "-o", tmp_path / "c").exit_code == 0
    assert [(p.start_s, p.ceiling_s) for p in policies] == [
        (0.02, 0.5), (0.03, 0.04), (1.0, 10.0)]
    assert transcripts(tmp_path / "a")["async--case1"]["calls"][0]["polls"] >= 1


def test_dry_run_shows_the_endpoint_of_each_mode(api: MockServer) -> None:
    path = MODES_DIR / "chat.yaml"
    body = {"model": "glm-4-flash", "messages": FEW_SHOT, "temperature": 0.3, "max_tokens": 200}
    turns = ["我是小明，你还记得我吗？", "谢谢，再见！"]
    for mode, extra in [("sync", {}), ("stream", {"stream": True}), ("async", {})]:
        result = glmrun(path, "--dry-run", "--mode", mode, "--base-url", api.base_url)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {
            "id": "chat", "endpoint": ENDPOINTS[mode], "base_url": api.base_url,
            "body": {**body, **extra}, "turns": turns,
        }
    assert api.requests == []


# -- the seed's example, token by token ----------------------------------------------------


def test_seed_greeting_streams_token_by_token_and_records_ttft(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = glmrun(REPO / "convos/greeting.yaml", "--mode", "stream", "--mock", "--live",
                    "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"[greeting turn 0] {GREETING_REPLY}\n✔ greeting  52 tokens  ")
    assert result.stdout.count(GREETING_REPLY) == 1  # no preview repeated after the live text
    call = transcripts(out)["greeting"]["calls"][0]
    assert call["content"] == GREETING_REPLY and call["finish_reason"] == "stop"
    assert call["chunks"] == pieces(GREETING_REPLY) + 1
    assert 0 < call["ttft_ms"] <= call["latency_ms"]


def test_live_prints_each_turn_of_a_multi_turn_stream_on_its_own_labelled_line(
    tmp_path: Path,
) -> None:
    result = glmrun(REPO / "convos/multi_turn.yaml", "--mode", "stream", "--mock", "--live",
                    "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "[multi_turn turn 0] Echo: 你好，我是小明。 (2 messages)",
        "[multi_turn turn 1] Echo: 我叫小明，你还记得我叫什么吗？ (4 messages)",
        "[multi_turn turn 2] Echo: 谢谢，再见！ (6 messages)",
    ]
    assert lines[3].startswith("✔ multi_turn  178 tokens  ")


class RecordingStream(io.StringIO):
    """A stdout that remembers each write and when it happened."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((time.monotonic(), text))
        return super().write(text)


def test_live_reporter_writes_each_delta_as_it_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    delay = 0.01
    out, err = RecordingStream(), io.StringIO()
    reporter = ConsoleReporter(out=out, err=err, live=True)
    plans = session.load_plans(session.Selection(paths=(REPO / "convos/greeting.yaml",),
                                                 mode="stream"))
    with MockServer(MockConfig(chunk_delay_s=delay)) as srv:
        summary = session.run_plans(
            plans, session.BackendSettings(base_url=srv.base_url),
            RunOptions(out_dir=tmp_path / "out"), reporter)
    assert summary.exit_code == 0
    n = pieces(GREETING_REPLY)
    assert out.writes[0][1] == "[greeting turn 0] "
    deltas = out.writes[1:n + 1]
    assert n > 5
    assert [text for _, text in deltas] == list(split_text(GREETING_REPLY))
    assert out.writes[n + 1][1] == "\n" and out.writes[n + 2][1].startswith("✔ greeting")
    # The pieces reach the terminal while the stream is still coming, not in one go at the end.
    stamps = [at for at, _ in deltas]
    assert stamps[-1] - stamps[0] >= 0.5 * delay * (n - 1)


def test_a_stream_retried_mid_way_closes_the_partial_live_line(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "cut.yaml", """
        model: m
        mode: stream
        messages: [{role: user, content: "abcdefghijklmnopqrstuvwxyz [[fault:stream_cutx1]]"}]
    """)
    result = run(api, path, tmp_path / "out", "--live", "--retries", "1")
    assert result.exit_code == 0, result.output
    reply = "Echo: abcdefghijklmnopqrstuvwxyz (1 messages)"
    parts = list(split_text(reply))
    partial = "".join(parts[: len(parts) // 2])
    assert result.stdout.startswith(
        f"[cut turn 0] {partial} [stream: retrying]\n[cut turn 0] {reply}\n✔ cut  ")


# -- streams that go wrong ------------------------------------------------------------------

FILTERED = STREAM_ERROR[1]
BAD_REPLY = "Echo: bad (1 messages)"


def _cut_message() -> str:
    return (f"stream ended after {pieces(BAD_REPLY) // 2} chunks without a final chunk "
            "(no finish_reason)")


# fault -> (kind, code, HTTP status, message or its start, retried by glmrun)
STREAM_FAULTS: dict[str, tuple[str, str | None, int | None, str, bool]] = {
    "stream_cut": ("stream", None, None, "the connection broke mid-response: ", True),
    "stream_cut_done": ("stream", None, None, _cut_message(), True),
    "stream_error_event": ("content_filter", "1301", None, FILTERED, False),
    "stream_data_error": ("content_filter", "1301", None, FILTERED, False),
    "finish_sensitive": ("content_filter", "1301", None,
                         "the reply was stopped by Zhipu's content filter "
                         "(finish_reason 'sensitive')", False),
    "finish_network_error": ("stream", None, None,
                             "the model's inference was interrupted "
                             "(finish_reason 'network_error')", True),
    "1301": ("content_filter", "1301", 400, FILTERED, False),
}


def _suite_with_one_bad(tmp_path: Path, mode: str, fault: str) -> Path:
    return write(tmp_path, "s.yaml", f"""
        model: glm-4-flash
        mode: {mode}
        messages: [{{role: user, content: "{{{{ text }}}}"}}]
        cases: [{{text: "fine"}}, {{text: "bad [[fault:{fault}]]"}}, {{text: "also fine"}}]
    """)


def _others_passed(ts: dict[str, dict[str, Any]]) -> None:
    assert ts["s--case1"]["status"] == ts["s--case3"]["status"] == "passed"
    assert ts["s--case1"]["messages"][-1]["content"] == "Echo: fine (1 messages)"
    assert ts["s--case3"]["messages"][-1]["content"] == "Echo: also fine (1 messages)"


@pytest.mark.parametrize("fault", sorted(STREAM_FAULTS))
def test_a_broken_stream_is_an_error_and_the_others_still_pass(
    api: MockServer, tmp_path: Path, fault: str
) -> None:
    kind, code, status, message, retried = STREAM_FAULTS[fault]
    out = tmp_path / "out"
    result = run(api, _suite_with_one_bad(tmp_path, "stream", fault), out, "--retries", "1")
    assert result.exit_code == 3, result.output
    ts = transcripts(out)
    _others_passed(ts)
    bad = ts["s--case2"]
    assert bad["status"] == "error"
    error = bad["error"]
    assert (error["kind"], error["code"], error["status"]) == (kind, code, status)
    assert error["message"].startswith(message)
    if fault != "stream_cut":
        assert error["message"] == message
    assert bad["messages"] == [{"role": "user", "content": f"bad [[fault:{fault}]]"}]
    call = bad["calls"][-1]
    assert call["error"] == error and call["content"] is None
    assert [r["error"]["kind"] for r in call["retries"]] == ([kind] if retried else [])
    sent = [b for b in chat_bodies(api) if "bad" in b["messages"][0]["content"]]
    assert len(sent) == (2 if retried else 1) and all(b["stream"] is True for b in sent)
    assert "⚠ s--case2" in result.stdout
    assert "3 runs of 1 conversation: 2 passed, 0 failed, 1 error\n" in result.stdout


def test_a_stream_without_done_is_accepted_as_complete(api: MockServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(api, _suite_with_one_bad(tmp_path, "stream", "no_done"), out, "--retries", "0")
    assert result.exit_code == 0, result.output
    ts = transcripts(out)
    _others_passed(ts)
    bad = ts["s--case2"]
    assert bad["status"] == "passed" and bad["error"] is None
    assert bad["messages"][-1] == {"role": "assistant", "content": BAD_REPLY}
    call = bad["calls"][0]
    assert call["finish_reason"] == "stop" and call["chunks"] == pieces(BAD_REPLY) + 1
    assert call["usage"] == {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33,
                             "cached_tokens": 0, "reasoning_tokens": 0}


@pytest.mark.parametrize(("fault", "kind"), [("stream_cut", "stream"),
                                             ("stream_cut_done", "stream"),
                                             ("finish_network_error", "stream"),
                                             ("500", "server")])
def test_a_retryable_stream_fault_is_retried_and_recorded(
    api: MockServer, tmp_path: Path, fault: str, kind: str
) -> None:
    out = tmp_path / "out"
    # x1: the emulator breaks the first request of this conversation only
    result = run(api, _suite_with_one_bad(tmp_path, "stream", f"{fault}x1"), out,
                 "--retries", "2")
    assert result.exit_code == 0, result.output
    ts = transcripts(out)
    _others_passed(ts)
    bad = ts["s--case2"]
    assert bad["status"] == "passed" and bad["messages"][-1]["content"] == BAD_REPLY
    (retry,) = bad["calls"][0]["retries"]
    assert retry["attempt"] == 1 and retry["error"]["kind"] == kind and retry["wait_ms"] >= 0
    assert bad["calls"][0]["chunks"] == pieces(BAD_REPLY) + 1


# -- async tasks that go wrong --------------------------------------------------------------


def _failed_task(api: MockServer, ts: dict[str, dict[str, Any]]) -> tuple[str, int]:
    """The task id of the failed conversation (polled, but not any passing one's) and polls."""
    ok = {t["calls"][0]["task_id"] for t in ts.values() if t["status"] == "passed"}
    (task,) = set(polled_tasks(api)) - ok
    return task, polled_tasks(api).count(task)


def test_an_async_task_that_fails_is_an_error_naming_the_task(
    api: MockServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run(api, _suite_with_one_bad(tmp_path, "async", "async_fail"), out)
    assert result.exit_code == 3, result.output
    ts = transcripts(out)
    _others_passed(ts)
    bad = ts["s--case2"]
    task, polls = _failed_task(api, ts)
    assert polls == 3  # 2 PROCESSING answers, then FAIL
    assert bad["status"] == "error"
    assert bad["error"] == {"kind": "task_failed", "code": None, "status": None,
                            "message": f"async task {task} ended with task_status=FAIL "
                                       f"after {polls} polls"}
    assert bad["calls"][-1]["error"] == bad["error"] and bad["calls"][-1]["retries"] == []
    assert "⚠ s--case2" in result.stdout and task in result.stdout


def test_an_async_task_that_never_finishes_times_out_naming_the_task(
    api: MockServer, tmp_path: Path
) -> None:
    # The good tasks are done at their first poll, so the 1 s the bad one is given is all
    # headroom for them (submit and one 0.05 s wait), however loaded the machine is.
    api.config.async_polls = 0
    out = tmp_path / "out"
    result = run(api, _suite_with_one_bad(tmp_path, "async", "async_never"), out,
                 "--poll-timeout", "1", "--poll-interval", "0.05")
    assert result.exit_code == 3, result.output
    ts = transcripts(out)
    _others_passed(ts)
    bad = ts["s--case2"]
    task, polls = _failed_task(api, ts)
    assert polls >= 1
    good = [ts[i]["calls"][0]["task_id"] for i in ("s--case1", "s--case3")]
    assert [polled_tasks(api).count(t) for t in good] == [1, 1]  # done at the first poll
    assert bad["status"] == "error"
    assert bad["error"] == {"kind": "task_timeout", "code": None, "status": None,
                            "message": f"async task {task} did not finish within 1 s "
                                       f"({polls} polls)"}
    assert bad["calls"][-1]["error"] == bad["error"]


def test_a_failed_async_call_record_keeps_its_task_id_and_polls(
    api: MockServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run(api, _suite_with_one_bad(tmp_path, "async", "async_fail"), out)
    ts = transcripts(out)
    task, polls = _failed_task(api, ts)
    call = ts["s--case2"]["calls"][-1]
    assert (call["task_id"], call["polls"]) == (task, polls)


# -- the examples ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["stream", "async", "thinking"])
def test_example_validates_and_runs_green_on_the_mock(tmp_path: Path, name: str) -> None:
    path = REPO / "convos" / f"{name}.yaml"
    assert glmrun("validate", path).exit_code == 0
    out = tmp_path / "out"
    result = glmrun(path, "--mock", "-o", out, "--poll-interval", "0.01")
    assert result.exit_code == 0, result.output
    ts = transcripts(out)
    assert ts and all(t["status"] == "passed" for t in ts.values())
    assert all(t["mode"] == ("sync" if name == "thinking" else name) for t in ts.values())
