"""The emulator speaks today's API: Zhipu's whole error-code table, `content_filter` blocks and
the 1301 refusal, the tokenizer, request_id uniqueness (1231), capability errors and uploads,
all through the real zhipuai SDK."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from zhipuai import ZhipuAI
from zhipuai.core._errors import APIStatusError

from glmrun.mock import MockServer
from glmrun.mock.errors import CODES

pytestmark = pytest.mark.timeout(60)

TEXT = "glm-4-flash"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(40))).decode()


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer() as s:
        yield s


@pytest.fixture(scope="module")
def client(server: MockServer) -> Iterator[ZhipuAI]:
    c = ZhipuAI(api_key="test-key", base_url=server.base_url, max_retries=0)
    yield c
    c.close()


def user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def refused(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(APIStatusError) as info:
        call()
    body: dict[str, Any] = info.value.response.json()
    return info.value.response.status_code, body


# ------------------------------------------------------------------ the code table


def test_the_table_has_every_documented_code_with_its_documented_status() -> None:
    documented = {"1000", "1001", "1002", "1003", "1004", "1005", "1100", "1110", "1111",
                  "1112", "1113", "1120", "1121", "1200", "1210", "1211", "1212", "1213",
                  "1214", "1215", "1220", "1221", "1222", "1230", "1231", "1234", "1261",
                  "1300", "1301", "1302", "1303", "1304", "1305", "1308", "1309", "1310",
                  "1311", "1312", "1313"}
    assert set(CODES) == documented
    # docs.bigmodel.cn/cn/faq/api-code pairs these with their HTTP status
    assert {c: CODES[c][0] for c in ("1000", "1001", "1003", "1005", "1113", "1200", "1210")} \
        == {"1000": 401, "1001": 401, "1003": 401, "1005": 401, "1113": 429, "1200": 500,
            "1210": 400}


@pytest.mark.parametrize("code", sorted(CODES))
def test_each_code_is_reachable_with_its_status_and_message(client: ZhipuAI, code: str) -> None:
    status, body = refused(lambda: client.chat.completions.create(
        model=TEXT, messages=user(f"x [[fault:{code}]]")))
    expected_status, message = CODES[code]
    assert status == expected_status
    assert body["error"]["code"] == code
    pattern = re.escape(message).replace(r"\{reset\}", r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
    pattern = pattern.replace(r"\{error_id\}", r"\w+").replace(r"\{request_id\}", r"\S+")
    assert re.fullmatch(pattern, body["error"]["message"]), body["error"]["message"]


# ------------------------------------------------------------------ content safety


def test_a_reply_carries_the_content_filter_block_a_marker_asks_for(client: ZhipuAI) -> None:
    reply = client.chat.completions.create(model=TEXT, messages=user("hi [[content_filter:2]]"))
    assert reply.content_filter == [{"role": "assistant", "level": 2}]  # type: ignore[attr-defined]
    assert reply.choices[0].message.content == "Echo: hi (1 messages)"
    plain = client.chat.completions.create(model=TEXT, messages=user("hi"))
    assert "content_filter" not in (plain.model_extra or {})


def test_a_streamed_reply_carries_it_in_its_final_chunk(client: ZhipuAI) -> None:
    chunks = list(client.chat.completions.create(
        model=TEXT, messages=user("hi [[content_filter:user:0]]"), stream=True))
    blocks = [(c.model_extra or {}).get("content_filter") for c in chunks]
    assert blocks[-1] == [{"role": "user", "level": 0}]
    assert not any(blocks[:-1])


def test_an_async_result_carries_it_too(client: ZhipuAI) -> None:
    task = client.chat.asyncCompletions.create(
        model=TEXT, messages=user("hi [[content_filter:history:3]] [[async_polls:0]]"))
    result = client.chat.asyncCompletions.retrieve_completion_result(id=task.id)
    assert result.task_status == "SUCCESS"
    assert (result.model_extra or {}).get("content_filter") == [{"role": "history", "level": 3}]


def test_a_malformed_content_filter_marker_is_a_1210(client: ZhipuAI) -> None:
    status, body = refused(lambda: client.chat.completions.create(
        model=TEXT, messages=user("hi [[content_filter:robot:7]]")))
    assert (status, body["error"]["code"]) == (400, "1210")
    assert "LEVEL 0-3" in body["error"]["message"]


def test_the_1301_refusal_says_which_side_was_judged(client: ZhipuAI) -> None:
    status, body = refused(lambda: client.chat.completions.create(
        model=TEXT, messages=user("hi [[fault:1301]]")))
    assert status == 400
    assert body == {"error": {"code": "1301", "message": CODES["1301"][1]},
                    "contentFilter": [{"level": 1, "role": "user"}]}


# ------------------------------------------------------------------ tokenizer


def tokenize(client: ZhipuAI, body: dict[str, Any]) -> Any:
    """The SDK has no tokenizer resource; its generic `post` sends the request with its auth."""
    return client.post("/tokenizer", body=body, cast_type=object)


@pytest.mark.parametrize("messages", [
    user("你好"),
    [{"role": "system", "content": "Be brief."}, *user("How many tokens? [[latency:0]]")],
    user([{"type": "text", "text": "看"}, {"type": "image_url", "image_url": {"url": PNG}}]),
])
def test_the_tokenizer_counts_what_a_chat_reply_reports(
    client: ZhipuAI, messages: list[dict[str, Any]]
) -> None:
    counted = tokenize(client, {"model": "glm-4.6v", "messages": messages})
    assert set(counted) == {"id", "created", "request_id", "usage"}
    assert counted["request_id"] == counted["id"]
    assert isinstance(counted["created"], int)
    chat = client.chat.completions.create(model="glm-4.6v", messages=messages)
    assert counted["usage"] == {"prompt_tokens": chat.usage.prompt_tokens}


def test_the_tokenizer_count_is_deterministic_and_grows_with_the_text(client: ZhipuAI) -> None:
    short = tokenize(client, {"model": TEXT, "messages": user("ab")})
    again = tokenize(client, {"model": TEXT, "messages": user("ab")})
    long = tokenize(client, {"model": TEXT, "messages": user("ab" * 50)})
    assert short["usage"] == again["usage"] == {"prompt_tokens": 2}
    assert long["usage"] == {"prompt_tokens": 51}
    assert short["id"] != again["id"]
    given = tokenize(client, {"model": TEXT, "messages": user("ab"), "request_id": "tok-1"})
    assert given["request_id"] == "tok-1"


def test_the_tokenizer_checks_model_messages_and_capabilities(
    client: ZhipuAI, server: MockServer
) -> None:
    status, body = refused(lambda: tokenize(client, {"model": TEXT, "messages": []}))
    assert (status, body["error"]["code"]) == (400, "1214")
    status, body = refused(lambda: tokenize(client, {"messages": user("x")}))
    assert (status, body["error"]["code"]) == (400, "1210")
    image = user([{"type": "image_url", "image_url": {"url": PNG}}])
    status, body = refused(lambda: tokenize(client, {"model": TEXT, "messages": image}))
    assert (status, body["error"]["code"]) == (400, "1210")
    with httpx.Client() as http:
        bare = http.post(f"{server.base_url}/tokenizer",
                         json={"model": TEXT, "messages": user("x")})
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "1001"


# ------------------------------------------------------------------ request_id


def test_a_request_id_already_answered_is_refused_with_1231(client: ZhipuAI) -> None:
    first = client.chat.completions.create(model=TEXT, messages=user("a"), request_id="dup-1")
    assert first.request_id == "dup-1"
    status, body = refused(lambda: client.chat.completions.create(
        model=TEXT, messages=user("something else"), request_id="dup-1"))
    assert (status, body["error"]) == (400, {"code": "1231", "message": "您已有请求：dup-1"})
    # streamed and async requests share the ids
    status, body = refused(lambda: list(client.chat.completions.create(
        model=TEXT, messages=user("a"), request_id="dup-1", stream=True)))
    assert body["error"]["code"] == "1231"
    status, body = refused(lambda: client.chat.asyncCompletions.create(
        model=TEXT, messages=user("a"), request_id="dup-1"))
    assert body["error"]["code"] == "1231"
    other = client.chat.completions.create(model=TEXT, messages=user("a"), request_id="dup-2")
    assert other.request_id == "dup-2"


def test_a_request_refused_before_its_answer_leaves_its_id_free(client: ZhipuAI) -> None:
    messages = user("retry me [[fault:500x1]]")
    status, _ = refused(lambda: client.chat.completions.create(
        model=TEXT, messages=messages, request_id="retry-1"))
    assert status == 500
    again = client.chat.completions.create(model=TEXT, messages=messages, request_id="retry-1")
    assert again.request_id == "retry-1"


# ------------------------------------------------------------------ capabilities


@pytest.mark.parametrize(("model", "part", "refusal"), [
    (TEXT, {"type": "image_url", "image_url": {"url": PNG}}, "image_url"),
    (TEXT, {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
     "input_audio"),
    ("glm-4v-flash", {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
     "video_url"),
    ("glm-4.6v", {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
     None),
    ("glm-4v-flash", {"type": "image_url", "image_url": {"url": PNG}}, None),
])
def test_a_part_the_model_cannot_take_is_a_1210(
    client: ZhipuAI, model: str, part: dict[str, Any], refusal: str | None
) -> None:
    messages = user([{"type": "text", "text": "look"}, part])
    if refusal is None:
        reply = client.chat.completions.create(model=model, messages=messages)
        assert reply.choices[0].message.content.startswith("Echo: look [")
        return
    status, body = refused(lambda: client.chat.completions.create(model=model,
                                                                  messages=messages))
    assert (status, body["error"]["code"]) == (400, "1210")
    assert body["error"]["message"] == (
        f"API 调用参数有误，请检查文档。(messages[0]: {model} does not take {refusal})")


# ------------------------------------------------------------------ uploads


def test_an_upload_keeps_its_name_and_bytes(client: ZhipuAI) -> None:
    data = b"x\r\n\r\n--not-a-boundary\r\n\x00\xff\n"
    file = client.files.create(file=('a "quoted" 名.jsonl', data, "application/jsonl"),
                               purpose="batch")
    assert file.filename == 'a "quoted" 名.jsonl'
    assert file.bytes == len(data)
    assert client.files.content(file.id).content == data


def test_an_upload_that_is_not_multipart_is_a_1210(server: MockServer) -> None:
    with httpx.Client() as http:
        response = http.post(f"{server.base_url}/files", content=b"{}",
                             headers={"Authorization": "Bearer k",
                                      "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "1210"


def test_the_readme_tokenizer_example_runs_as_shown() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    section = readme[readme.index("## The emulator"):readme.index("## Performance")]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the README's emulator section lost its tokenizer example"
    exec(compile(code.group(1), "README.md", "exec"), {})
