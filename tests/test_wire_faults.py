"""Server faults on the wire (issue 10: items 1, 9, 10, and the gzip bomb of 7).

Broken streams give their connection back; 200 replies that cannot be read are retried as
server faults; Zhipu's account and quota codes stop the run; gzip bombs are cut at a bound.
Everything runs through the real zhipuai SDK against the emulator, in every call mode.
"""

from __future__ import annotations

import gzip
import json
import re
import resource
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.e2e.harness import REPO, async_bodies, chat_bodies, run, transcripts, write

from glmrun import errors
from glmrun.backends import codes
from glmrun.backends.base import RequestIdentity
from glmrun.backends.bounded import BoundedTransport
from glmrun.backends.scripted import ScriptedBackend
from glmrun.backends.sdk import MAX_REPLY_BYTES
from glmrun.backends.zhipu import ZhipuBackend
from glmrun.load.spec import load_file
from glmrun.mock import MockServer
from glmrun.mock.errors import STATUS_FAULTS
from glmrun.plan.plans import plan_runs
from glmrun.run.options import RunOptions
from glmrun.run.runner import Runner
from glmrun.types import ChatRequest

ANY_CALL = RequestIdentity("test", 0)  # which run sends a request does not matter here

MODES = ("sync", "stream", "async")
STOP_CODES = ("1110", "1111", "1112", "1120", "1121", "1304", "1308", "1309", "1310", "1313")
END_CODES = ("1212", "1220", "1221", "1222", "1311")
RESET = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def _request(text: str, mode: str) -> ChatRequest:
    return ChatRequest(model="glm-4-flash", messages=({"role": "user", "content": text},),
                       params={}, mode=mode)  # type: ignore[arg-type]


def _call(backend: ZhipuBackend, text: str, mode: str) -> Any:
    request = _request(text, mode)
    if mode != "async":
        return backend.complete(request, identity=ANY_CALL)
    ticket = backend.submit(request, identity=ANY_CALL)
    for _ in range(10):
        if (reply := backend.poll(ticket)) is not None:
            return reply
    raise AssertionError("the task never finished")


def _suite(tmp_path: Path, mode: str, cases: list[str]) -> Path:
    """A suite of one conversation per case text, in `mode`."""
    rows = "".join(f"  - {{text: {json.dumps(c, ensure_ascii=False)}}}\n" for c in cases)
    return write(tmp_path, "s.yaml", f"model: glm-4-flash\nmode: {mode}\n"
                 "messages: [{role: user, content: '{{ text }}'}]\n" f"cases:\n{rows}")


# -- item 10: one table of Zhipu's codes ----------------------------------------------------


def test_the_codes_the_issue_names_are_in_the_table_with_their_action() -> None:
    actions = {code: codes.action(codes.ZHIPU_CODES[code].error) for code in
               (*STOP_CODES, *END_CODES, "1312", "1234")}
    assert {c for c, a in actions.items() if a == "stop the run"} == set(STOP_CODES)
    assert {c for c, a in actions.items() if a == "end that conversation"} == set(END_CODES)
    assert actions["1312"] == "retry after a backoff; concurrency kept"
    assert actions["1234"] == "retry"


def test_the_emulator_answers_each_code_with_the_status_of_the_table() -> None:
    for code, rule in codes.ZHIPU_CODES.items():
        if code in STATUS_FAULTS:
            assert STATUS_FAULTS[code][:2] == (rule.status, code), code
    assert set(STOP_CODES) | set(END_CODES) | {"1312", "1234"} <= set(STATUS_FAULTS)


def test_the_readme_error_table_is_the_code_table() -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    block = re.search(r"<!-- codes -->\n(.*?)\n<!-- /codes -->", readme, re.S)
    assert block is not None and block.group(1) == codes.code_table()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_each_code_reaches_glmrun_as_its_error_in_every_mode(
    server: MockServer, mode: str
) -> None:
    backend = ZhipuBackend(api_key="sk-0123456789abcdef", base_url=server.base_url)
    for code in (*STOP_CODES, *END_CODES, "1312", "1234"):
        with pytest.raises(errors.ApiError) as info:
            _call(backend, f"{mode} [[fault:{code}]]", mode)
        rule, err = codes.ZHIPU_CODES[code], info.value
        assert (type(err), err.status, err.code) == (rule.error, rule.status, code)
        expected = STATUS_FAULTS[code][2]
        pattern = re.escape(expected).replace(r"\{reset\}", RESET.pattern)
        assert re.fullmatch(pattern.replace(r"\{error_id\}", r"\w+"), err.message), err.message
    backend.close()


def test_a_quota_error_knows_when_it_resets() -> None:
    message = "已达到 5 小时的使用上限。您的限额将在 2026-07-11 19:25:37 重置。"
    message = message
    err = codes.classify(429, "1308", message)
    assert isinstance(err, errors.QuotaError) and err.fatal
    assert err.reset_at == "2026-07-11 19:25:37"
    assert codes.classify(429, "1309", "套餐已到期").reset_at is None  # type: ignore[attr-defined]


SUITE_CASES = 12


def _stop_suite(tmp_path: Path, mode: str, code: str) -> Path:
    return _suite(tmp_path, mode, [f"q1 [[fault:{code}]]",
                                   *(f"q{i}" for i in range(2, SUITE_CASES + 1))])


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("code", "mode", "jobs"), [
    *[(code, "sync", "1") for code in STOP_CODES],
    *[(code, mode, jobs) for code in ("1308", "1112") for mode in MODES for jobs in ("1", "8")
      if (mode, jobs) != ("sync", "1")],
])
@pytest.mark.slow
def test_an_account_or_quota_code_stops_the_run_at_once_with_zhipus_message(
    api: MockServer, tmp_path: Path, code: str, mode: str, jobs: str
) -> None:
    out = tmp_path / "out"
    result = run(api, _stop_suite(tmp_path, mode, code), out, "-j", jobs, "--retries", "3")
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    ts = transcripts(out)
    bad = ts.pop("s--case1")
    rule = codes.ZHIPU_CODES[code]
    assert bad["status"] == "error" and bad["calls"][-1]["retries"] == []  # never retried
    assert (bad["error"]["kind"], bad["error"]["code"], bad["error"]["status"]) \
        == (rule.error.kind, code, rule.status)
    stopped = f"{bad['error']['message']} (HTTP {rule.status}, code {code})"
    # those already taken by a worker: answered if their call was in flight, else not sent,
    # or (async) their task submitted and then no longer polled, which the message says
    outcomes = {t["status"] if t["status"] == "passed" else
                re.sub(r"^async task \S+ was submitted", "async task T was submitted",
                       t["error"]["message"]) for t in ts.values()}
    assert outcomes <= {"passed",
                        f"its next request was not sent: the run stopped after: {stopped}",
                        *([f"async task T was submitted, then no longer polled: the run "
                           f"stopped after: {stopped}"] if mode == "async" else [])}
    bodies = async_bodies(api) if mode == "async" else chat_bodies(api)
    sent = len(bodies)
    # each request sent belongs to a conversation with a transcript (async: a task submitted
    # before the stop is abandoned, not polled to its end)
    assert 1 + sum(t["status"] == "passed" for t in ts.values()) <= sent <= 1 + len(ts)
    # at once: nothing is sent after the stop. At -j 1 the stopping request is the last the
    # emulator saw (and in sync the only one; async submits of other conversations may come
    # before it, as tasks are submitted up front, and are then abandoned, as said above)
    if jobs == "1":
        assert str(bodies[-1]["messages"][-1]["content"]).startswith("q1 "), bodies[-1]
        assert mode == "async" or sent == 1
    else:
        assert sent <= 2 * int(jobs)
    if (not_run := SUITE_CASES - 1 - len(ts)) > 0:
        assert f"{not_run} not run" in result.stdout
    (stop,) = [line for line in result.stdout.splitlines() if line.startswith("stopped: ")]
    assert stop.startswith(f"stopped: {stopped}")
    reset = RESET.search(bad["error"]["message"])
    if code in ("1308", "1310"):
        assert reset is not None
        assert stop.endswith(f"it resets at {reset.group(0)} (Beijing time); "
                             "then run again with --resume")
    else:
        assert reset is None and "--resume" in stop


def test_an_overloaded_model_is_retried_without_narrowing_concurrency(tmp_path: Path) -> None:
    def run_with(first: errors.ApiError) -> tuple[Any, Runner]:
        backend = ScriptedBackend()
        backend.enqueue(first, first)
        path = tmp_path / "c.yaml"
        path.write_text("model: m\nmessages: [{role: user, content: 'q {{ n }}'}]\n"
                        "cases: [{n: 1}, {n: 2}, {n: 3}, {n: 4}]\n", encoding="utf-8")
        options = RunOptions(out_dir=tmp_path / "out", formats=("json",), seed=1,
                             concurrency=4)
        runner = Runner(backend, options, sleep=lambda s: None)
        return runner.run(plan_runs([load_file(path)])), runner

    overloaded, wide = run_with(codes.classify(429, "1312", "该模型当前访问量过大"))
    limited, narrowed = run_with(codes.classify(429, "1303", "频率过高"))
    assert overloaded.count("passed") == limited.count("passed") == 4
    assert wide.limiter.width == 4  # 1312 is the model's load, not this account's
    assert narrowed.limiter.width < 4


# -- items 1 and 9: faults inside HTTP 200, in a suite -----------------------------------

# fault marker -> (modes, status, error kind or None, retries recorded), with --retries 1
MATRIX: dict[str, tuple[tuple[str, ...], str, str | None, int]] = {
    "1212": (MODES, "error", "bad_request", 0),
    "1220": (MODES, "error", "bad_request", 0),
    "1221": (MODES, "error", "bad_request", 0),
    "1222": (MODES, "error", "bad_request", 0),
    "1311": (MODES, "error", "bad_request", 0),
    "1234x1": (MODES, "passed", None, 1),
    "1312x1": (MODES, "passed", None, 1),
    "1312": (MODES, "error", "overloaded", 1),
    "json_cutx1": (("sync", "async"), "passed", None, 1),
    "json_emptyx1": (("sync", "async"), "passed", None, 1),
    "message_nullx1": (("sync", "async"), "passed", None, 1),
    "json_cut": (("sync",), "error", "bad_reply", 1),
    "message_null": (("sync",), "error", "bad_reply", 1),
    "stream_bad_jsonx1": (("stream",), "passed", None, 1),
    "stream_retry_linex1": (("stream",), "passed", None, 1),
    "stream_stallx1": (("stream",), "passed", None, 1),
    "stream_bad_json": (("stream",), "error", "bad_reply", 1),
    "stream_retry_line": (("stream",), "error", "bad_reply", 1),
    "stream_data_error": (("stream",), "error", "content_filter", 0),
    "stream_error_event": (("stream",), "error", "content_filter", 0),
}
RETRY_KIND = {"1234": "server", "1312": "overloaded", "json_cut": "bad_reply",
              "json_empty": "bad_reply", "message_null": "bad_reply",
              "stream_bad_json": "bad_reply", "stream_retry_line": "bad_reply",
              "stream_stall": "timeout"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("jobs", ["1", "8"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_each_server_fault_ends_its_conversation_or_is_retried_and_the_others_pass(
    api: MockServer, tmp_path: Path, mode: str, jobs: str
) -> None:
    faults = [f for f, (modes, *_) in MATRIX.items() if mode in modes]
    cases = ["fine", *(f"f{i} [[fault:{f}]]" for i, f in enumerate(faults)), "also fine"]
    path = _suite(tmp_path, mode, cases)
    out = tmp_path / "out"
    # --timeout: a stalled stream is given up after 1 s, then retried
    result = run(api, path, out, "-j", jobs, "--retries", "1", "--timeout", "1")
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output and "internal" not in result.output
    ts = transcripts(out)
    first, last = ts["s--case1"], ts[f"s--case{len(cases)}"]
    assert first["status"] == last["status"] == "passed"
    assert first["messages"][-1]["content"] == "Echo: fine (1 messages)"
    sent = [json.dumps(b, ensure_ascii=False)
            for b in (async_bodies(api) if mode == "async" else chat_bodies(api))]
    for i, fault in enumerate(faults, start=2):
        t = ts[f"s--case{i}"]
        _, status, kind, retries = MATRIX[fault]
        name = fault.removesuffix("x1")
        assert t["status"] == status, (fault, t["error"])
        assert (t["error"] or {}).get("kind") == kind, (fault, t["error"])
        call = t["calls"][-1]
        assert [r["error"]["kind"] for r in call["retries"]] == [RETRY_KIND.get(name)] * retries
        if status == "passed":
            assert t["messages"][-1]["content"] == f"Echo: f{i - 2} (1 messages)"
        # async: a reply spoiled after the task ran is re-read by polling, never re-submitted
        again = 0 if mode == "async" and name in ("json_cut", "json_empty", "message_null") \
            else retries
        assert sum(f"[[fault:{fault}]]" in b for b in sent) == 1 + again, fault
    assert f"{len(cases)} runs of 1 conversation: " in result.stdout


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fault", ["stream_data_error", "stream_error_event",
                                   "stream_bad_json", "stream_retry_line", "stream_cut"])
@pytest.mark.slow
def test_a_stream_that_breaks_gives_its_connection_back(
    api: MockServer, tmp_path: Path, fault: str
) -> None:
    # -j 1: one connection in the pool. Before the fix, the broken stream kept it and the
    # next conversation waited for it forever.
    path = _suite(tmp_path, "stream", [f"bad [[fault:{fault}]]", f"retried [[fault:{fault}x1]]",
                                       *(f"q{i}" for i in range(3, 7))])
    out = tmp_path / "out"
    result = run(api, path, out, "-j", "1", "--retries", "1")
    ts = transcripts(out)
    assert ts["s--case1"]["status"] == "error"
    retryable = fault not in ("stream_data_error", "stream_error_event")
    # a retryable mid-stream error's retry gets a connection and succeeds
    assert ts["s--case2"]["status"] == ("passed" if retryable else "error")
    assert [ts[f"s--case{i}"]["status"] for i in range(3, 7)] == ["passed"] * 4
    assert result.exit_code == 3 and "Traceback" not in result.output
    # each broken stream's connection was closed, not kept: the next request opened another
    broken = (2 if retryable else 1) + 1
    assert api.stats.connections >= 1 + broken


# -- item 7 (part): gzip bombs ----------------------------------------------------------------


# ~1-2.5 s: the emulator builds its 1 GiB bomb once (its CRC), the client decodes 64 MiB
# ~1-2.5 s: the emulator builds its 1 GiB bomb once (its CRC), the client decodes 64 MiB
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_a_gzip_bomb_is_cut_at_the_bound_and_retried(
    api: MockServer, tmp_path: Path, mode: str
) -> None:
    path = _suite(tmp_path, mode, ["boom [[fault:gzip_bombx1]]", "fine"])
    out = tmp_path / "out"
    result = run(api, path, out, "-j", "1", "--retries", "1", "--timeout", "20")
    assert result.exit_code == 0, result.output
    ts = transcripts(out)
    bomb = ts["s--case1"]
    assert bomb["status"] == "passed" and bomb["messages"][-1]["content"] == \
        "Echo: boom (1 messages)"
    (retry,) = bomb["calls"][0]["retries"]
    assert retry["error"] == {
        "kind": "reply_too_large", "status": None, "code": None,
        "message": f"the reply body passed {MAX_REPLY_BYTES:,} bytes once decoded (gzip); "
                   "glmrun stopped reading it"}
    assert ts["s--case2"]["status"] == "passed"
    # the bomb expands to 1 GiB: read whole, it alone would have taken more than this
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert peak < api.config.bomb_bytes, peak


@pytest.mark.slow
def test_a_bomb_that_keeps_coming_is_an_error_with_a_clear_message(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "s.yaml", """
        model: glm-4-flash
        messages: [{role: user, content: "boom [[fault:gzip_bomb]]"}]
    """)
    out = tmp_path / "out"
    result = run(api, path, out, "--retries", "1", "--timeout", "20")
    assert result.exit_code == 3, result.output
    [t] = transcripts(out).values()
    assert t["error"]["kind"] == "reply_too_large"
    assert "stopped reading it" in result.stdout and "Traceback" not in result.output


def _transport(body: bytes, encoding: str | None, limit: int = 1000) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Encoding": encoding} if encoding else {}
        return httpx.Response(200, headers=headers, content=body)

    inner = httpx.MockTransport(handler)
    return httpx.Client(transport=BoundedTransport(inner, limit=limit, file_limit=limit * 10))


@pytest.mark.parametrize(("encoding", "encode"), [
    (None, lambda b: b),
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b, wbits=-15)),  # raw deflate, as some servers send
])
def test_replies_within_the_bound_decode_as_before(encoding: str | None, encode: Any) -> None:
    body = json.dumps({"text": "你好" * 100}, ensure_ascii=False).encode()
    with _transport(encode(body), encoding) as client:
        response = client.get("http://127.0.0.1/x")
    assert response.content == body and "content-encoding" not in response.headers


def test_the_bound_counts_plain_bodies_too_and_files_get_their_own() -> None:
    with _transport(b"x" * 1001, None) as client, pytest.raises(errors.ReplyTooLargeError):
        client.get("http://127.0.0.1/chat/completions")
    with _transport(b"x" * 5000, None) as client:
        assert len(client.get("http://127.0.0.1/files/f-1/content").content) == 5000


def test_an_encoding_glmrun_did_not_ask_for_is_refused() -> None:
    with _transport(b"\x00" * 10, "br") as client, \
            pytest.raises(errors.BadReplyError, match="'br'"):
        client.get("http://127.0.0.1/x")
