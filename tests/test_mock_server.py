"""The emulator, driven by the real zhipuai SDK over loopback HTTP."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from zhipuai import ZhipuAI
from zhipuai.core._errors import (
    APIAuthenticationError,
    APIConnectionError,
    APIInternalError,
    APIReachLimitError,
    APIRequestFailedError,
    APIResponseError,
    APIServerFlowExceedError,
    APIStatusError,
    APITimeoutError,
)

from glmrun.mock import GREETING_REPLY, MockConfig, MockServer

MODEL = "glm-4-flash"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


@pytest.fixture
def server() -> Iterator[MockServer]:
    with MockServer() as s:
        yield s


@pytest.fixture
def client(server: MockServer) -> ZhipuAI:
    return ZhipuAI(api_key="test-key", base_url=server.base_url, max_retries=0)


def user(text: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def ask(client: ZhipuAI, text: Any, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=user(text), **kwargs)


def error_of(exc: APIStatusError) -> dict[str, Any]:
    body: dict[str, Any] = exc.response.json()
    return body


def raw_stream(server: MockServer, text: str) -> tuple[httpx.Response, str]:
    """POST a streaming request with plain httpx and return the raw SSE text."""
    with httpx.Client(timeout=5) as http:
        response = http.post(
            f"{server.base_url}/chat/completions",
            headers={"Authorization": "Bearer test-key"},
            json={"model": MODEL, "messages": user(text), "stream": True},
        )
        return response, response.text


# ------------------------------------------------------------------ chat


def test_sync_echo_and_greeting(client: ZhipuAI) -> None:
    reply = ask(client, "你好")
    assert reply.choices[0].message.content == GREETING_REPLY
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == MODEL

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "What is 2+2?"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, request_id="r-42")
    content = "Echo: What is 2+2? (4 messages)"
    assert reply.choices[0].message.content == content
    assert reply.request_id == "r-42"
    prompt = len("Be brief." "Hi" "Hello" "What is 2+2?") // 2 + 1
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, len(content))
    assert usage.total_tokens == prompt + len(content)


def test_request_is_recorded_exactly(client: ZhipuAI, server: MockServer) -> None:
    ask(client, "hello", temperature=1.0, top_p=0.5, max_tokens=100, stop=["END"])
    assert server.count() == 1
    (recorded,) = server.requests
    assert (recorded.method, recorded.path) == ("POST", "/api/paas/v4/chat/completions")
    assert recorded.headers["authorization"] == "Bearer test-key"
    assert recorded.body == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "temperature": 0.99,  # the SDK clamps into (0, 1)
        "top_p": 0.5,
        "max_tokens": 100,
        "stop": ["END"],
        "response_format": None,
        "thinking": None,
    }


def test_paths_without_prefix_and_unknown_routes(server: MockServer) -> None:
    root = server.base_url.removesuffix("/api/paas/v4")
    auth = {"Authorization": "Bearer x"}
    with httpx.Client(timeout=5) as http:
        ok = http.post(f"{root}/chat/completions", headers=auth,
                       json={"model": MODEL, "messages": user("x")})
        missing = http.get(f"{root}/nowhere", headers=auth)
    assert ok.json()["choices"][0]["message"]["content"] == "Echo: x (1 messages)"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "404"


def test_stream_assembles_to_the_sync_reply(client: ZhipuAI) -> None:
    text = "讲个笑话 🙂 please"
    sync = ask(client, text).choices[0].message.content
    chunks = list(ask(client, text, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == sync
    assert all(c.usage is None for c in chunks[:-1])
    assert all(len(c.choices[0].delta.content or "") <= 3 for c in chunks)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens == len(sync)


def test_raw_sse_format(server: MockServer) -> None:
    response, text = raw_stream(server, "ab")
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    events = text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    final = json.loads(events[-3].removeprefix("data: "))
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"]["completion_tokens"] == len("Echo: ab (1 messages)")


def test_tool_call_rounds(client: ZhipuAI) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}},
             {"type": "function", "function": {"name": "get_time", "parameters": {}}}]
    messages: list[dict[str, Any]] = user(
        '北京天气? [[tool:get_weather {"city": "北京"}]] '
        '[[tool:get_time {"tz": "+8"} | get_weather {"list": [[1]]}]]'
    )
    rounds = []
    for _ in range(2):
        reply = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert not choice.message.content
        calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls]
        rounds.append(calls)
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
            for i, n, a in calls
        ]})
        messages += [{"role": "tool", "tool_call_id": i, "content": f"{n} ok"}
                     for i, n, _ in calls]
    assert rounds == [
        [("call_1", "get_weather", '{"city": "北京"}')],
        [("call_2", "get_time", '{"tz": "+8"}'), ("call_3", "get_weather", '{"list": [[1]]}')],
    ]
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == (
        "Tool results: get_weather ok; get_time ok; get_weather ok"
    )


@pytest.mark.parametrize("tool_stream", [False, True])
def test_tool_calls_stream_by_index(client: ZhipuAI, tool_stream: bool) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    text = '[[tool:f {"long": "arguments here"} | g not-json]]'
    extra = {"extra_body": {"tool_stream": True}} if tool_stream else {}
    chunks = list(ask(client, text, tools=tools, stream=True, **extra))
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    # without tool_stream each call arrives whole; with it, the arguments come in pieces
    assert len(deltas) == (1 + 7 + 1 + 2 if tool_stream else 2)
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for d in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += d.id or ""
            call["name"] += (d.function and d.function.name) or ""
            call["arguments"] += (d.function and d.function.arguments) or ""
    assert calls == {
        0: {"id": "call_1", "name": "f", "arguments": '{"long": "arguments here"}'},
        1: {"id": "call_2", "name": "g", "arguments": "not-json"},
    }
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(("extra", "detail"), [
    ({"thinking": {"type": "on"}}, "thinking.type must be enabled or disabled"),
    ({"thinking": {"type": "enabled", "clear_thinking": "no"}},
     "thinking.clear_thinking must be a boolean"),
    ({"reasoning_effort": "huge"},
     "reasoning_effort must be one of none, minimal, low, medium, high, xhigh, max"),
    ({"tool_stream": 1}, "tool_stream must be a boolean"),
    ({"watermark_enabled": "yes"}, "watermark_enabled must be a boolean"),
])
def test_thinking_parameters_are_checked(
    client: ZhipuAI, extra: dict[str, Any], detail: str
) -> None:
    with pytest.raises(APIStatusError) as info:
        ask(client, "hi", extra_body=extra)
    assert info.value.status_code == 400
    assert error_of(info.value) == {"error": {
        "code": "1210", "message": f"API 调用参数有误，请检查文档。({detail})"}}


def test_thinking_and_json_object(client: ZhipuAI) -> None:
    reply = ask(client, "说 JSON", thinking={"type": "enabled"},
                response_format={"type": "json_object"})
    message = reply.choices[0].message
    assert json.loads(message.content) == {"echo": "说 JSON", "messages": 1}
    assert message.reasoning_content == "Thinking about: 说 JSON"
    assert reply.usage.completion_tokens == len(message.content) + len(message.reasoning_content)
    chunks = list(ask(client, "hm", thinking={"type": "enabled"}, stream=True))
    kinds = ["r" if c.choices[0].delta.reasoning_content else "c"
             for c in chunks[:-1]]
    assert kinds == sorted(kinds, reverse=True)  # all reasoning deltas come first
    assert "".join(c.choices[0].delta.reasoning_content or "" for c in chunks) == (
        "Thinking about: hm"
    )


def test_image_parts_are_described(client: ZhipuAI) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    content = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": data_url}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    reply = client.chat.completions.create(model="glm-4v-flash", messages=user(content))
    # the SDK strips "data:image/png;base64," before sending: the mime type is sniffed
    assert reply.choices[0].message.content == (
        f"Echo: look [image image/png {len(PNG)} bytes] "
        "[image url https://example.com/cat.jpg] (1 messages)"
    )
    # a text-only model of the table refuses media parts, as the API does
    with pytest.raises(APIStatusError) as info:
        ask(client, content)
    assert info.value.status_code == 400
    assert error_of(info.value) == {"error": {"code": "1210", "message": (
        "API 调用参数有误，请检查文档。(messages[0]: glm-4-flash does not take image_url)")}}


def test_thinking_models_reason_by_default(client: ZhipuAI) -> None:
    message = client.chat.completions.create(
        model="glm-4.7", messages=user("想想")).choices[0].message
    assert message.reasoning_content == "Thinking about: 想想"
    message = client.chat.completions.create(
        model="glm-4.7", messages=user("想想"), thinking={"type": "disabled"}).choices[0].message
    assert message.reasoning_content is None
    assert ask(client, "想想").choices[0].message.reasoning_content is None  # glm-4-flash


def test_stop_and_max_tokens_cut_the_reply(client: ZhipuAI) -> None:
    reply = ask(client, "abc STOP def", stop=["STOP"])
    assert reply.choices[0].message.content == "Echo: abc "
    assert reply.choices[0].finish_reason == "stop"
    reply = ask(client, "abcdef", max_tokens=5)
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == ("Echo:", "length")


# ------------------------------------------------------------------ async


def test_async_processing_then_success(client: ZhipuAI, server: MockServer) -> None:
    task = client.chat.asyncCompletions.create(model=MODEL, messages=user("hi [[async_polls:3]]"))
    assert task.task_status == "PROCESSING"
    statuses = []
    while True:
        result = client.chat.asyncCompletions.retrieve_completion_result(task.id)
        statuses.append(result.task_status)
        if result.task_status != "PROCESSING":
            break
    assert statuses == ["PROCESSING"] * 3 + ["SUCCESS"]
    assert result.id == task.id and result.model == MODEL
    assert result.choices[0].message.content == "Echo: hi (1 messages)"
    assert result.usage.total_tokens > 0
    assert server.count(f"/async-result/{task.id}", "GET") == 4
    assert server.count("/async/chat/completions") == 1
    assert server.count() == 0  # sync chat only


def test_async_fail_never_and_unknown(client: ZhipuAI) -> None:
    create = client.chat.asyncCompletions.create
    failing = create(model=MODEL, messages=user("[[fault:async_fail]]"))
    never = create(model=MODEL, messages=user("[[fault:async_never]]"))
    results = [client.chat.asyncCompletions.retrieve_completion_result(failing.id)
               for _ in range(3)]
    assert [r.task_status for r in results] == ["PROCESSING", "PROCESSING", "FAIL"]
    assert not hasattr(results[-1], "choices") or results[-1].choices is None
    for _ in range(5):
        status = client.chat.asyncCompletions.retrieve_completion_result(never.id).task_status
        assert status == "PROCESSING"
    with pytest.raises(APIStatusError) as info:
        client.chat.asyncCompletions.retrieve_completion_result("task-nope")
    assert info.value.status_code == 404
    assert error_of(info.value)["error"]["code"] == "404"


# ------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("fault", "error", "status", "code"),
    [
        ("429", APIReachLimitError, 429, "1302"),
        ("1303", APIReachLimitError, 429, "1303"),
        ("1305", APIReachLimitError, 429, "1305"),
        ("1113", APIReachLimitError, 429, "1113"),
        ("500", APIInternalError, 500, "500"),
        ("503", APIServerFlowExceedError, 503, "503"),
        ("1301", APIRequestFailedError, 400, "1301"),
        ("1211", APIRequestFailedError, 400, "1211"),
        ("1261", APIRequestFailedError, 400, "1261"),
        ("401", APIAuthenticationError, 401, "1000"),
    ],
)
def test_status_faults(
    client: ZhipuAI, fault: str, error: type[APIStatusError], status: int, code: str
) -> None:
    with pytest.raises(error) as info:
        ask(client, f"hi [[fault:{fault}]]")
    assert info.value.status_code == status
    body = error_of(info.value)
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_status_fault_applies_to_stream_and_async(client: ZhipuAI) -> None:
    with pytest.raises(APIInternalError):
        ask(client, "[[fault:500]]", stream=True)
    with pytest.raises(APIReachLimitError):
        client.chat.asyncCompletions.create(model=MODEL, messages=user("[[fault:1113]]"))


def test_unknown_fault_marker_is_a_400(client: ZhipuAI) -> None:
    with pytest.raises(APIRequestFailedError) as info:
        ask(client, "[[fault:teapot]]")
    assert error_of(info.value)["error"]["code"] == "1210"


def test_reset_is_a_connection_error(client: ZhipuAI, server: MockServer) -> None:
    with pytest.raises(APIConnectionError):
        ask(client, "[[fault:reset]]")
    assert ask(client, "after").choices[0].message.content == "Echo: after (1 messages)"


def test_hang_times_out_and_stop_is_prompt(server: MockServer) -> None:
    client = ZhipuAI(api_key="k", base_url=server.base_url, max_retries=0, timeout=0.3)
    with pytest.raises(APITimeoutError):
        ask(client, "[[fault:hang]]")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2


def test_stream_cut_breaks_the_body(client: ZhipuAI) -> None:
    seen: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        for chunk in ask(client, "a longer text to cut [[fault:stream_cut]]", stream=True):
            seen.append(chunk.choices[0].delta.content or "")
    assert seen and "Echo: a longer text to cut (1 messages)".startswith("".join(seen))


def test_stream_cut_done_has_no_finish_chunk(client: ZhipuAI, server: MockServer) -> None:
    chunks = list(ask(client, "cut [[fault:stream_cut_done]]", stream=True))
    assert chunks and all(c.choices[0].finish_reason is None and c.usage is None for c in chunks)
    _, text = raw_stream(server, "cut [[fault:stream_cut_done]]")
    assert text.endswith("data: [DONE]\n\n") and '"finish_reason"' not in text


def test_no_done_ends_after_the_final_chunk(client: ZhipuAI, server: MockServer) -> None:
    chunks = list(ask(client, "x [[fault:no_done]]", stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is not None
    response, text = raw_stream(server, "x [[fault:no_done]]")
    assert "[DONE]" not in text and '"usage"' in text.split("\n\n")[-2]
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize("fault", ["stream_error_event", "stream_data_error"])
def test_stream_error_inside_http_200(client: ZhipuAI, server: MockServer, fault: str) -> None:
    seen = []
    with pytest.raises(APIResponseError) as info:
        for chunk in ask(client, f"hello [[fault:{fault}]]", stream=True):
            seen.append(chunk)
    assert len(seen) == 2
    assert isinstance(info.value.json_data, dict) and info.value.json_data["code"] == "1301"
    response, text = raw_stream(server, f"hello [[fault:{fault}]]")
    assert response.status_code == 200
    last = text.split("\n\n")[-2]
    expected = "event: error\ndata: " if fault == "stream_error_event" else "data: "
    assert last.startswith(expected + '{"error": {"code": "1301"')


@pytest.mark.parametrize(
    ("fault", "finish"),
    [("finish_sensitive", "sensitive"), ("finish_network_error", "network_error"),
     ("length", "length")],
)
def test_finish_reason_faults(client: ZhipuAI, fault: str, finish: str) -> None:
    assert ask(client, f"x [[fault:{fault}]]").choices[0].finish_reason == finish
    last = list(ask(client, f"x [[fault:{fault}]]", stream=True))[-1]
    assert last.choices[0].finish_reason == finish


def test_count_suffix_fails_then_succeeds(client: ZhipuAI, server: MockServer) -> None:
    for _ in range(2):
        with pytest.raises(APIInternalError):
            ask(client, "retry me [[fault:500x2]]")
    assert ask(client, "retry me [[fault:500x2]]").choices[0].message.content == (
        "Echo: retry me (1 messages)"
    )
    assert server.count() == 3
    # another conversation has its own count; several markers fire in order
    errors = []
    for _ in range(3):
        try:
            ask(client, "other [[fault:500x1]] [[fault:429x1]]")
            errors.append("ok")
        except APIStatusError as exc:
            errors.append(error_of(exc)["error"]["code"])
    assert errors == ["500", "1302", "ok"]


def test_inject_takes_precedence(client: ZhipuAI, server: MockServer) -> None:
    server.inject("503", "1301")
    with pytest.raises(APIServerFlowExceedError):
        ask(client, "[[fault:500]]")
    with pytest.raises(APIRequestFailedError):
        ask(client, "plain")
    assert ask(client, "plain").choices[0].message.content == "Echo: plain (1 messages)"
    with pytest.raises(ValueError, match="unknown fault"):
        server.inject("nope")


def test_script_replies_in_order(client: ZhipuAI, server: MockServer) -> None:
    server.script({"content": "scripted"},
                  {"tool_calls": [{"name": "lookup", "arguments": {"q": "猫"}}]})
    server.inject("500")  # a failed request does not use up a scripted reply
    with pytest.raises(APIInternalError):
        ask(client, "x")
    assert ask(client, "x").choices[0].message.content == "scripted"
    call = ask(client, "x").choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1", "lookup", '{"q": "猫"}'
    )
    assert ask(client, "x").choices[0].message.content == "Echo: x (1 messages)"


def test_concurrency_limit() -> None:
    config = MockConfig(concurrency_limit=3, latency_s=0.2, retry_after_s=0.5)
    with MockServer(config) as server:
        run_concurrently(server)


def run_concurrently(server: MockServer) -> None:
    client = ZhipuAI(api_key="k", base_url=server.base_url, max_retries=0)
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            ask(client, f"n{i}")
            result = "ok"
        except APIReachLimitError as exc:
            assert error_of(exc)["error"]["code"] == "1302"
            assert exc.response.headers["retry-after"] == "0.5"
            result = "429"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") + outcomes.count("429") == 10
    assert outcomes.count("429") >= 1 and outcomes.count("ok") >= 3
    assert server.stats.peak_in_flight <= 3
    assert server.stats.rejected == outcomes.count("429")


def test_auth(server: MockServer) -> None:
    server.config.api_key = "right"
    with pytest.raises(APIAuthenticationError) as info:
        ask(ZhipuAI(api_key="wrong", base_url=server.base_url, max_retries=0), "x")
    assert error_of(info.value)["error"]["code"] == "1000"
    right = ZhipuAI(api_key="right", base_url=server.base_url, max_retries=0)
    assert ask(right, "x").choices[0].message.content == "Echo: x (1 messages)"
    with httpx.Client(timeout=5) as http:
        missing = http.post(f"{server.base_url}/chat/completions", json={})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "1001"


def test_loopback_only() -> None:
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            MockServer(host=host)
    with MockServer(host="localhost") as s:
        assert s.base_url.startswith("http://127.0.0.1:")


# ------------------------------------------------------------------ files and batches


def batch_line(custom_id: str, text: str, model: str = MODEL) -> str:
    return json.dumps({
        "custom_id": custom_id, "method": "POST", "url": "/v4/chat/completions",
        "body": {"model": model, "messages": user(text)},
    }, ensure_ascii=False)


def upload(client: ZhipuAI, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    file = client.files.create(file=("input.jsonl", data, "application/jsonl"), purpose="batch")
    assert (file.bytes, file.filename, file.purpose, file.status) == (
        len(data), "input.jsonl", "batch", "processed"
    )
    return str(file.id)


def run_batch(client: ZhipuAI, file_id: str, **kwargs: Any) -> list[Any]:
    batch = client.batches.create(input_file_id=file_id, endpoint="/v4/chat/completions",
                                  completion_window="24h", **kwargs)
    seen = [batch]
    while seen[-1].status not in ("completed", "failed", "expired", "cancelled"):
        seen.append(client.batches.retrieve(batch.id))
        assert len(seen) < 10
    return seen


def read_jsonl(client: ZhipuAI, file_id: str) -> list[dict[str, Any]]:
    content = client.files.content(file_id).content
    return [json.loads(line) for line in content.decode().splitlines()]


def test_files_list_content_delete(client: ZhipuAI) -> None:
    first = upload(client, ["a"])
    second = upload(client, ["b"])
    assert [f.id for f in client.files.list().data] == [second, first]
    assert client.files.content(first).content == b"a\n"
    deleted = client.files.delete(first)
    assert (deleted.id, deleted.deleted) == (first, True)
    assert [f.id for f in client.files.list(purpose="batch").data] == [second]
    with pytest.raises(APIStatusError) as info:
        client.files.content(first)
    assert info.value.status_code == 404


def test_batch_lifecycle(client: ZhipuAI) -> None:
    file_id = upload(client, [batch_line("a", "你好"), batch_line("b", "two"),
                              batch_line("c", "three [[fault:finish_sensitive]]")])
    seen = run_batch(client, file_id, metadata={"suite": "demo"})
    assert [b.status for b in seen] == ["validating", "in_progress", "in_progress", "completed"]
    counts = [(b.request_counts.completed, b.request_counts.total) for b in seen]
    assert counts == [(0, 0), (1, 3), (2, 3), (3, 3)]
    done = seen[-1]
    assert done.metadata == {"suite": "demo"} and done.error_file_id is None
    assert done.completed_at is not None and done.in_progress_at is not None
    lines = read_jsonl(client, str(done.output_file_id))
    assert [line["custom_id"] for line in lines] == ["a", "b", "c"]
    assert all(line["response"]["status_code"] == 200 for line in lines)
    bodies = [line["response"]["body"] for line in lines]
    assert bodies[0]["choices"][0]["message"]["content"] == GREETING_REPLY
    assert bodies[1]["choices"][0]["message"]["content"] == "Echo: two (1 messages)"
    assert bodies[2]["choices"][0]["finish_reason"] == "sensitive"
    assert file_id not in [f.id for f in client.files.list().data]  # auto_delete_input_file
    assert [b.id for b in client.batches.list()] == [done.id]


def test_batch_failing_line_goes_to_the_error_file(client: ZhipuAI) -> None:
    file_id = upload(client, [batch_line("ok", "fine"), batch_line("bad", "x [[fault:1301]]")])
    done = run_batch(client, file_id, auto_delete_input_file=False)[-1]
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    (error,) = read_jsonl(client, str(done.error_file_id))
    assert error["custom_id"] == "bad"
    assert error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "1301"
    assert [line["custom_id"] for line in read_jsonl(client, str(done.output_file_id))] == ["ok"]
    assert file_id in [f.id for f in client.files.list().data]


def test_batch_validation_fails(client: ZhipuAI) -> None:
    file_id = upload(client, [batch_line("a", "x"), "{not json", batch_line("a", "y"),
                              json.dumps({"body": {}}), batch_line("m", "z", model="glm-4")])
    done = run_batch(client, file_id)[-1]
    assert done.status == "failed" and done.failed_at is not None
    errors = [(e.code, e.line) for e in done.errors.data]
    assert errors == [("invalid_json", 2), ("duplicate_custom_id", 3),
                      ("missing_custom_id", 4), ("mixed_models", 5)]


@pytest.mark.parametrize(("fault", "status"),
                         [("batch_expire", "expired"), ("batch_fail", "failed")])
def test_batch_outcome_markers(client: ZhipuAI, fault: str, status: str) -> None:
    file_id = upload(client, [batch_line("a", "x"), batch_line("b", f"y [[fault:{fault}]]")])
    done = run_batch(client, file_id)[-1]
    assert done.status == status and done.output_file_id is None
    if status == "failed":
        assert done.errors.data[0].line == 2


def test_batch_cancel(client: ZhipuAI) -> None:
    file_id = upload(client, [batch_line("a", "x")])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v4/chat/completions",
                                  completion_window="24h")
    assert client.batches.cancel(batch.id).status == "cancelling"
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    with pytest.raises(APIRequestFailedError):
        client.batches.cancel(batch.id)
