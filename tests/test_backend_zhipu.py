"""Both real SDKs (zhipuai through ZhipuBackend, zai-sdk through ZaiBackend) against the
emulator: replies, streams, tasks, errors — every test runs through each adapter."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from glmrun import errors
from glmrun.backends.base import RequestIdentity
from glmrun.backends.regions import find_api_key
from glmrun.backends.sdk import SdkBackend
from glmrun.backends.zai import ZaiBackend
from glmrun.backends.zhipu import ZhipuBackend
from glmrun.mock import GREETING_REPLY, MockServer
from glmrun.types import ChatRequest, Delta, Reply, ToolCall

Make = Callable[..., SdkBackend]
ANY_CALL = RequestIdentity("test", 0)  # which run sends a request does not matter here


@pytest.fixture(params=[ZhipuBackend, ZaiBackend], ids=["zhipuai", "zai"])
def backend(request: pytest.FixtureRequest) -> Make:
    """A backend on the emulator through one SDK or the other."""
    adapter = request.param

    def make(server: MockServer, **kw: object) -> SdkBackend:
        return adapter(api_key="test-key", base_url=server.base_url, **kw)  # type: ignore[no-any-return]

    return make


def user(text: str, mode: str = "sync", **params: object) -> ChatRequest:
    return ChatRequest(model="glm-4-flash", messages=({"role": "user", "content": text},),
                       params=params, mode=mode)  # type: ignore[arg-type]


def test_sync_reply_and_exact_body_on_the_wire(backend: Make, server: MockServer) -> None:
    b = backend(server)
    reply = b.complete(user("你好", temperature=0.5, max_tokens=100, meta={"a": "b"}),
                       identity=ANY_CALL)
    assert reply.content == GREETING_REPLY
    assert reply.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens > 0
    assert reply.id and reply.latency_ms > 0
    body = server.requests[-1].body
    assert body["model"] == "glm-4-flash"
    assert body["messages"] == [{"role": "user", "content": "你好"}]
    assert (body["temperature"], body["max_tokens"], body["meta"]) == (0.5, 100, {"a": "b"})
    assert server.requests[-1].headers["authorization"] == "Bearer test-key"


def test_unknown_params_travel_as_extra_body(backend: Make, server: MockServer) -> None:
    backend(server).complete(user("hi", brand_new_param=7), identity=ANY_CALL)
    assert server.requests[-1].body["brand_new_param"] == 7


def test_messages_are_not_mutated_by_the_sdk(backend: Make, server: MockServer) -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    req = ChatRequest(model="glm-4v", messages=({"role": "user", "content": [part]},))
    backend(server).complete(req, identity=ANY_CALL)
    assert part["image_url"]["url"].startswith("data:image/png;base64,")


def test_stream_assembles_deltas_and_measures_ttft(backend: Make, server: MockServer) -> None:
    seen: list[Delta] = []
    reply = backend(server, record_chunk_offsets=True).complete(
        user("你好", "stream"), seen.append, identity=ANY_CALL)
    assert reply.content == GREETING_REPLY
    assert "".join(d.content for d in seen) == GREETING_REPLY and len(seen) > 5
    assert reply.finish_reason == "stop" and reply.usage is not None
    assert reply.ttft_ms is not None and reply.ttft_ms <= reply.latency_ms
    assert reply.chunks is not None and reply.chunks == len(reply.chunk_offsets_ms or ())
    assert server.requests[-1].body["stream"] is True


def test_stream_merges_tool_call_deltas_by_index(backend: Make, server: MockServer) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    text = 'weather? [[tool:get_weather {"city": "北京"} | get_time {"tz": "CST"}]]'
    for mode in ("sync", "stream"):
        reply = backend(server).complete(user(text, mode, tools=tools), identity=ANY_CALL)
        assert reply.finish_reason == "tool_calls"
        assert [(c.name, c.arguments) for c in reply.tool_calls] == [
            ("get_weather", '{"city": "北京"}'), ("get_time", '{"tz": "CST"}')]
        assert all(c.id for c in reply.tool_calls)


def test_async_submit_then_poll_until_success(backend: Make, server: MockServer) -> None:
    b = backend(server)
    ticket = b.submit(user("你好", "async"), identity=ANY_CALL)
    assert ticket.task_id
    answers = [b.poll(ticket) for _ in range(3)]
    assert answers[:2] == [None, None]
    assert isinstance(answers[2], Reply) and answers[2].content == GREETING_REPLY


def test_async_fail_raises_task_failed(backend: Make, server: MockServer) -> None:
    b = backend(server)
    ticket = b.submit(user("x [[fault:async_fail]]", "async"), identity=ANY_CALL)
    with pytest.raises(errors.TaskFailedError, match="FAIL"):
        for _ in range(5):
            b.poll(ticket)


@pytest.mark.parametrize(("fault", "cls", "status", "code"), [
    ("429", errors.RateLimitError, 429, "1302"),
    ("1305", errors.RateLimitError, 429, "1305"),
    ("1113", errors.BalanceError, 429, "1113"),
    ("1301", errors.ContentFilterError, 400, "1301"),
    ("1211", errors.BadRequestError, 400, "1211"),
    ("1261", errors.BadRequestError, 400, "1261"),
    ("401", errors.AuthError, 401, "1000"),
    ("500", errors.ServerError, 500, "500"),
    ("503", errors.ServerError, 503, None),
])
def test_status_errors_map_to_glmrun_errors(
    backend: Make, server: MockServer, fault: str, cls: type[errors.ApiError], status: int,
    code: str | None,
) -> None:
    with pytest.raises(cls) as info:
        backend(server).complete(user(f"x [[fault:{fault}]]"), identity=ANY_CALL)
    assert type(info.value) is cls
    assert info.value.status == status
    if code is not None:
        assert info.value.code == code
    assert info.value.message  # Zhipu's own message travels with the error


def test_retryability_follows_the_kind() -> None:
    assert errors.RateLimitError("x").retryable and errors.ServerError("x").retryable
    assert not errors.ContentFilterError("x").retryable
    assert errors.AuthError("x").fatal and errors.BalanceError("x").fatal


def test_connection_reset_is_a_network_error(backend: Make, server: MockServer) -> None:
    with pytest.raises(errors.NetworkError):
        backend(server).complete(user("x [[fault:reset]]"), identity=ANY_CALL)


def test_timeout_is_a_timeout_error(backend: Make, server: MockServer) -> None:
    with pytest.raises(errors.RequestTimeoutError):
        backend(server, timeout_s=0.3).complete(user("x [[fault:hang]]"), identity=ANY_CALL)


@pytest.mark.parametrize(("fault", "cls", "words"), [
    ("stream_cut", errors.StreamError, "broke"),
    ("stream_cut_done", errors.StreamError, "without a final chunk"),
    ("stream_error_event", errors.ContentFilterError, "code 1301"),
    ("stream_data_error", errors.ContentFilterError, "code 1301"),
    ("finish_sensitive", errors.ContentFilterError, "sensitive"),
    ("finish_network_error", errors.StreamError, "network_error"),
])
def test_broken_streams_are_errors_never_silently_complete(
    backend: Make, server: MockServer, fault: str, cls: type[errors.ApiError], words: str
) -> None:
    with pytest.raises(cls, match=words):
        backend(server).complete(user(f"你好 [[fault:{fault}]]", "stream"), identity=ANY_CALL)


def test_stream_without_done_but_with_final_chunk_is_complete(
    backend: Make, server: MockServer
) -> None:
    reply = backend(server).complete(user("你好 [[fault:no_done]]", "stream"), identity=ANY_CALL)
    assert reply.content == GREETING_REPLY and reply.finish_reason == "stop"


def test_http_error_on_stream_request_maps_like_sync(backend: Make, server: MockServer) -> None:
    with pytest.raises(errors.RateLimitError):
        backend(server).complete(user("x [[fault:429]]", "stream"), identity=ANY_CALL)


def test_retry_after_header_is_read(backend: Make, server: MockServer) -> None:
    server.config.concurrency_limit = 1
    server.config.retry_after_s = 2.5
    server.config.latency_s = 0.5
    import threading
    b = backend(server)
    t = threading.Thread(target=lambda: b.complete(user("slow"), identity=ANY_CALL))
    t.start()
    import time
    time.sleep(0.15)
    with pytest.raises(errors.RateLimitError) as info:
        b.complete(user("second"), identity=ANY_CALL)
    t.join()
    assert info.value.retry_after == 2.5


def test_find_api_key_accepts_both_names() -> None:
    assert find_api_key({"ZHIPU_API_KEY": "k2"}) == "k2"
    assert find_api_key({"ZHIPUAI_API_KEY": "k1", "ZHIPU_API_KEY": "k2"}) == "k1"
    assert find_api_key({}) is None


def test_tool_call_message_shape() -> None:
    tc = ToolCall(id="call_1", name="f", arguments="{}")
    reply = Reply(content=None, finish_reason="tool_calls", tool_calls=(tc,))
    assert reply.to_message() == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
