"""Reply logic of the emulator: markers, faults, deterministic replies and their wire JSON.

Nothing here does I/O; the HTTP plumbing lives in `server.py`. Markers are read from the text of
the last user message (and stripped from what is echoed):

    [[fault:NAME]]   [[fault:NAMExN]]   [[latency:MS]]   [[chunk_delay:MS]]   [[async_polls:N]]
    [[tool:NAME ARGS]]   [[tool:NAME ARGS | NAME ARGS]]

With several fault markers, the first one that still fires wins, so `[[fault:500x1]]
[[fault:429x1]]` answers 500, then 429, then succeeds.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from glmrun import models

GREETING_PROMPT = "你好"
GREETING_REPLY = (
    "你好👋！我是人工智能助手智谱清言（ChatGLM），可以叫我小智🤖，很高兴见到你，欢迎问我任何问题。"
)

RequestKind = Literal["sync", "stream", "async", "batch"]
JsonObject = dict[str, Any]


class WireError(Exception):
    """An error the emulator answers with: HTTP status plus Zhipu's `{"error": {code, message}}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} code {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> JsonObject:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> JsonObject:
    """Zhipu's error envelope; `code` is always a string on the wire."""
    return {"error": {"code": code, "message": message}}


# name -> (HTTP status, business code, message); messages are Zhipu's own where documented.
STATUS_FAULTS: dict[str, tuple[int, str, str]] = {
    "429": (429, "1302", "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"),
    "1302": (429, "1302", "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"),
    "1303": (429, "1303", "您当前使用该API的频率过高，请降低频率，或联系客服增加限额。"),
    "1305": (429, "1305", "当前API请求过多，请稍后重试。"),
    "1113": (429, "1113", "您的账户已欠费，请充值后重试。"),
    "500": (500, "500", "Internal Error"),
    "503": (503, "503", "服务暂时不可用，请稍后重试。(Service Unavailable)"),
    "1301": (
        400,
        "1301",
        "系统检测到输入或生成内容可能包含不安全或敏感内容，请您避免输入易产生敏感内容的提示语，感谢您的配合。",
    ),
    "1211": (400, "1211", "模型不存在，请检查模型代码。"),
    "1261": (400, "1261", "Prompt 超长"),
    "401": (401, "1000", "身份验证失败。"),
    # account and quota codes: every further call fails the same way
    "1110": (429, "1110", "您的账户当前处于非活动状态。请检查账户信息。"),
    "1111": (429, "1111", "您的账户不存在。"),
    "1112": (429, "1112", "您的账户已被锁定，请联系客服解锁。"),
    "1120": (429, "1120", "无法成功访问您的账户，请稍后重试。"),
    "1121": (429, "1121", "账户存违规行为，账号已被锁定。"),
    "1304": (429, "1304", "该 API 已达今日调用次数限额，如有更多需求，请联系客服购买。"),
    "1308": (429, "1308", "已达到 5 小时的使用上限。您的限额将在 {reset} 重置。"),
    "1309": (429, "1309", "您的 GLM Coding Plan 套餐已到期，暂无法使用，前往官方续订后即可恢复 "
                          "https://bigmodel.cn/claude-code"),
    "1310": (429, "1310", "您已达到每周/每月使用上限，您的限额将在 {reset} 重置。"),
    "1313": (429, "1313", "您的账户当前使用模式不符合公平使用策略，请求频率已受到限制。"),
    # codes that end one conversation, or are worth a retry
    "1212": (400, "1212", "当前模型不支持 sse 调用方式。"),
    "1220": (403, "1220", "您无权访问 glm-4-plus。"),
    "1221": (404, "1221", "API glm-4-0520 已下线。"),
    "1222": (404, "1222", "API glm-x 不存在。"),
    "1311": (429, "1311", "当前订阅套餐暂未开放glm-4-plus权限。"),
    "1312": (429, "1312", "该模型当前访问量过大，请您稍后再试，或切换其他模型如 glm-4-flash 等。"),
    "1234": (500, "1234", "网络错误，错误id：{error_id}，请联系客服。"),
}
TRANSPORT_FAULTS = frozenset({"reset", "hang"})
STREAM_FAULTS = frozenset(
    {"stream_cut", "stream_cut_done", "no_done", "stream_error_event", "stream_data_error",
     "stream_bad_json", "stream_retry_line", "stream_stall"}
)
# Replies that say HTTP 200 but cannot be read: sync bodies, and an async task's first
# SUCCESS answer (so polling again finds it whole).
BODY_FAULTS = frozenset({"json_cut", "json_empty", "message_null"})
BOMB_FAULT = "gzip_bomb"  # sync, stream, async submit: a gzip body expanding to gigabytes
FINISH_FAULTS: dict[str, str] = {
    "finish_sensitive": "sensitive",
    "finish_network_error": "network_error",
    "length": "length",
    "context_window": "model_context_window_exceeded",
}
ASYNC_FAULTS = frozenset({"async_fail", "async_never"})
BATCH_FAULTS = frozenset({"batch_expire", "batch_fail"})
FAULT_NAMES = frozenset(
    set(STATUS_FAULTS) | TRANSPORT_FAULTS | STREAM_FAULTS | set(FINISH_FAULTS)
    | ASYNC_FAULTS | BATCH_FAULTS | BODY_FAULTS | {BOMB_FAULT}
)
BEIJING = timezone(timedelta(hours=8))

STREAM_ERROR = ("1301", STATUS_FAULTS["1301"][2])


def status_fault(name: str) -> WireError | None:
    """The error a status fault answers with, or None for faults that are not HTTP errors."""
    if name not in STATUS_FAULTS:
        return None
    status, code, message = STATUS_FAULTS[name]
    now = datetime.now(BEIJING)  # Zhipu states reset times in Beijing time
    message = message.format(reset=(now + timedelta(hours=5)).strftime("%Y-%m-%d %H:%M:%S"),
                             error_id=now.strftime("%Y%m%d%H%M%S") + "0a1b2c3d")
    return WireError(status, code, message)


def fault_applies(name: str, kind: RequestKind) -> bool:
    """Whether a fault has any effect on a request of this kind (others are skipped)."""
    if name in STATUS_FAULTS or name in FINISH_FAULTS:
        return True
    if name in TRANSPORT_FAULTS:
        return kind != "batch"
    if name in STREAM_FAULTS:
        return kind == "stream"
    if name in BODY_FAULTS:
        return kind in ("sync", "async")
    if name == BOMB_FAULT:
        return kind != "batch"
    if name in ASYNC_FAULTS:
        return kind == "async"
    return False  # batch outcome faults are read from the whole input file, not per request


def split_fault_count(text: str) -> tuple[str, int | None]:
    """`500x2` -> ("500", 2); `500` -> ("500", None); raises WireError for unknown names."""
    m = re.fullmatch(r"(.+?)x(\d+)", text)
    if m and m.group(1) in FAULT_NAMES:
        return m.group(1), int(m.group(2))
    if text in FAULT_NAMES:
        return text, None
    raise WireError(400, "1210", f"mock: unknown fault {text!r}; known: {sorted(FAULT_NAMES)}")


# --------------------------------------------------------------------------- markers


@dataclass(frozen=True)
class FaultMarker:
    name: str
    limit: int | None  # None: fires on every request
    text: str  # the marker as written, part of the xN counter's key


@dataclass(frozen=True)
class ToolCallSpec:
    name: str
    arguments: str


@dataclass(frozen=True)
class Directives:
    """What the markers of the last user message ask for, plus that text without them."""

    text: str = ""
    faults: tuple[FaultMarker, ...] = ()
    tool_rounds: tuple[tuple[ToolCallSpec, ...], ...] = ()
    latency_ms: float | None = None
    chunk_delay_ms: float | None = None
    async_polls: int | None = None


_MARKER_START = re.compile(r"\[\[(fault|latency|chunk_delay|async_polls|tool):")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _tool_marker_end(text: str, start: int) -> int:
    """Index of the `]]` closing a tool marker whose body starts at `start`.

    ARGS may itself contain `]]` (`{"a": [[1]]}`), so prefer the first `]]` that leaves every
    call's ARGS valid JSON; fall back to the first `]]` when ARGS is invalid on purpose.
    """
    candidates = [m.start() for m in re.finditer(r"(?=\]\])", text[start:])]
    for end in candidates:
        calls = _split_calls(text[start : start + end])
        if calls and all(_is_json(c.arguments) for c in calls):
            return start + end
    return start + candidates[0] if candidates else -1


def _split_calls(body: str) -> list[ToolCallSpec]:
    """`a {"x":1} | b {"y":2}` -> two calls; a `|` inside valid JSON ARGS does not split."""
    calls: list[ToolCallSpec] = []
    rest = body.strip()
    while rest:
        m = re.match(r"\s*([^\s{\[|]+)\s*", rest)
        if not m:
            break
        name, after = m.group(1), rest[m.end() :]
        cuts = [i for i, ch in enumerate(after) if ch == "|"] + [len(after)]
        cut = next((i for i in cuts if _is_json(after[:i].strip())), cuts[0])
        calls.append(ToolCallSpec(name, after[:cut].strip() or "{}"))
        rest = after[cut + 1 :].strip()
    return calls


def _number(kind: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise WireError(400, "1210", f"mock: [[{kind}:{value}]] needs a number") from None
    if number < 0:
        raise WireError(400, "1210", f"mock: [[{kind}:{value}]] must not be negative")
    return number


def parse_directives(text: str) -> Directives:
    """Read and strip the markers of one message text; WireError 400 on a malformed marker."""
    faults: list[FaultMarker] = []
    rounds: list[tuple[ToolCallSpec, ...]] = []
    values: dict[str, float] = {}
    kept: list[str] = []
    pos = 0
    while (m := _MARKER_START.search(text, pos)) is not None:
        kind, body_start = m.group(1), m.end()
        end = (
            _tool_marker_end(text, body_start) if kind == "tool" else text.find("]]", body_start)
        )
        if end < 0:
            break
        body = text[body_start:end]
        kept.append(text[pos : m.start()])
        pos = end + 2
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if kind == "fault":
            name, limit = split_fault_count(body.strip())
            faults.append(FaultMarker(name, limit, text[m.start() : end + 2]))
        elif kind == "tool":
            rounds.append(tuple(_split_calls(body)))
        else:
            values[kind] = _number(kind, body.strip())
    kept.append(text[pos:])
    polls = values.get("async_polls")
    return Directives(
        text="".join(kept).strip(),
        faults=tuple(faults),
        tool_rounds=tuple(r for r in rounds if r),
        latency_ms=values.get("latency"),
        chunk_delay_ms=values.get("chunk_delay"),
        async_polls=int(polls) if polls is not None else None,
    )


# --------------------------------------------------------------------------- requests

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


def _sniff_mime(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in _MAGIC if data.startswith(magic)), "unknown")


def describe_image(url: str) -> str:
    """` [image <mime> <n> bytes]` for inline data, ` [image url <url>]` for a link.

    The SDK strips `data:image/...;base64,` before sending, so bare base64 is inline data too;
    its mime type is then sniffed from the magic bytes.
    """
    mime: str | None = None
    payload = url
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            return f" [image url {url}]"
        mime = header[5:].split(";")[0] or "unknown"
    elif "://" in url or not re.fullmatch(r"[A-Za-z0-9+/=\s]+", url):
        return f" [image url {url}]"
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        return f" [image url {url}]"
    return f" [image {mime or _sniff_mime(data)} {len(data)} bytes]"


def message_text(content: object) -> str:
    """Text of a message's content: parts joined with a space, images described."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return json.dumps(content, ensure_ascii=False)
    texts: list[str] = []
    media: list[str] = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind in ("image_url", "video_url", "file_url"):
            ref = part.get(kind)
            url = str(ref.get("url", "")) if isinstance(ref, Mapping) else str(ref)
            if kind == "image_url":
                media.append(describe_image(url))
            else:
                media.append(f" [{kind.removesuffix('_url')} url {url}]")
    return " ".join(texts) + "".join(media)


def _prompt_chars(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(len(message_text(m.get("content"))) for m in messages)


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request with its markers read."""

    body: Mapping[str, Any]
    model: str
    messages: tuple[Mapping[str, Any], ...]
    stream: bool
    request_id: str | None
    directives: Directives
    conversation_key: str  # identifies the conversation up to its last user message

    @property
    def last_user_index(self) -> int:
        return next(
            (i for i in range(len(self.messages) - 1, -1, -1)
             if self.messages[i].get("role") == "user"),
            -1,
        )

    @property
    def after_last_user(self) -> tuple[Mapping[str, Any], ...]:
        return self.messages[self.last_user_index + 1 :]


def parse_chat_request(body: object) -> ChatRequest:
    """Check what the real API checks first (model, messages, stop) and read the markers."""
    if not isinstance(body, Mapping):
        raise WireError(400, "1210", "API 调用参数有误，请检查文档。(body must be a JSON object)")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError(400, "1210", "API 调用参数有误，请检查文档。(model is required)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError(400, "1214", "messages 参数非法。请检查文档。")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in (
            "system", "user", "assistant", "tool",
        ):
            raise WireError(400, "1214", f"messages[{i}] 参数非法。请检查文档。")
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > 1:
        raise WireError(400, "1210", "API 调用参数有误，请检查文档。(stop takes one string)")
    _check_thinking_params(body)
    _check_capabilities(model, messages)
    msgs = tuple(messages)
    last_user = next((m for m in reversed(msgs) if m.get("role") == "user"), None)
    directives = parse_directives(message_text(last_user.get("content")) if last_user else "")
    cut = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=len(msgs) - 1)
    key = hashlib.sha256(
        json.dumps(msgs[: cut + 1], sort_keys=True, ensure_ascii=False, default=str).encode()
    ).hexdigest()
    request_id = body.get("request_id")
    return ChatRequest(
        body=body,
        model=model,
        messages=msgs,
        stream=body.get("stream") is True,
        request_id=request_id if isinstance(request_id, str) and request_id else None,
        directives=directives,
        conversation_key=key,
    )


def _check_capabilities(model: str, messages: Sequence[Any]) -> None:
    """Media parts sent to a model of the table that takes text only: 1210, as the API."""
    known = models.find(model)
    if known is None or known.vision:
        return
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        kinds = {str(p.get("type")) for p in content if isinstance(p, Mapping)} if isinstance(
            content, list) else set()
        media = sorted(kinds & {"image_url", "video_url", "file_url"})
        if media:
            raise _invalid(f"messages[{i}]: {model} does not take {', '.join(media)}")


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def _invalid(detail: str) -> WireError:
    return WireError(400, "1210", f"API 调用参数有误，请检查文档。({detail})")


def _check_thinking_params(body: Mapping[str, Any]) -> None:
    """`thinking`, `reasoning_effort`, `tool_stream` and `watermark_enabled` as documented."""
    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, Mapping) or thinking.get("type") not in (
            "enabled", "disabled",
        ):
            raise _invalid("thinking.type must be enabled or disabled")
        clear = thinking.get("clear_thinking")
        if clear is not None and not isinstance(clear, bool):
            raise _invalid("thinking.clear_thinking must be a boolean")
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise _invalid(f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}")
    for flag in ("tool_stream", "watermark_enabled"):
        value = body.get(flag)
        if value is not None and not isinstance(value, bool):
            raise _invalid(f"{flag} must be a boolean")


class FaultLedger:
    """Counts `xN` faults per conversation so that a retried request eventually succeeds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fired: dict[tuple[str, str], int] = {}

    def pick(self, request: ChatRequest, kind: RequestKind) -> str | None:
        """The fault this request suffers, consuming one count of an `xN` marker."""
        for marker in request.directives.faults:
            if not fault_applies(marker.name, kind):
                continue
            if marker.limit is None:
                return marker.name
            key = (request.conversation_key, marker.text)
            with self._lock:
                fired = self._fired.get(key, 0)
                if fired < marker.limit:
                    self._fired[key] = fired + 1
                    return marker.name
        return None


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ScriptedReply:
    """One reply queued with `MockServer.script()`."""

    content: str | None = None
    tool_calls: tuple[ToolCallSpec, ...] = ()
    reasoning_content: str | None = None
    finish_reason: str | None = None

    @classmethod
    def from_dict(cls, reply: Mapping[str, Any]) -> ScriptedReply:
        """`{"content": str}` or `{"tool_calls": [{"name", "arguments"}]}` (+ optional
        `reasoning_content`, `finish_reason`); `arguments` may be a string or any JSON value."""
        unknown = set(reply) - {"content", "tool_calls", "reasoning_content", "finish_reason"}
        if unknown:
            raise ValueError(f"unknown keys in scripted reply: {sorted(unknown)}")
        if "content" not in reply and "tool_calls" not in reply:
            raise ValueError("a scripted reply needs 'content' or 'tool_calls'")
        calls: list[ToolCallSpec] = []
        for call in reply.get("tool_calls") or []:
            if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
                raise ValueError(f"a scripted tool call needs a 'name': {call!r}")
            args = call.get("arguments", "{}")
            if not isinstance(args, str):
                args = json.dumps(args, ensure_ascii=False)
            calls.append(ToolCallSpec(call["name"], args))
        content = reply.get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError("a scripted reply's 'content' must be a string")
        return cls(
            content=content,
            tool_calls=tuple(calls),
            reasoning_content=reply.get("reasoning_content"),
            finish_reason=reply.get("finish_reason"),
        )


@dataclass(frozen=True)
class Reply:
    content: str | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCall, ...] = field(default_factory=tuple)
    cached_tokens: int | None = None  # None: the model reports no prompt_tokens_details
    web_search: tuple[JsonObject, ...] = ()  # the reply's citations (a web_search tool)

    @property
    def reasoning_tokens(self) -> int:
        return len(self.reasoning_content or "")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _wants_thinking(body: Mapping[str, Any]) -> bool:
    """`thinking: {type: enabled}`, or a model that thinks by default (glm-4.7, glm-5.x) and
    was not told `disabled`."""
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, Mapping) else None
    if kind is not None:
        return bool(kind == "enabled")
    known = models.find(str(body.get("model", "")))
    return known is not None and known.thinking == "default"


def _wants_json(body: Mapping[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, Mapping) and fmt.get("type") == "json_object"


def _has_function_tools(body: Mapping[str, Any]) -> bool:
    tools = body.get("tools")
    return isinstance(tools, list) and any(
        isinstance(t, Mapping) and t.get("type") == "function" for t in tools
    )


def _issued_calls(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(
        len(m.get("tool_calls") or [])
        for m in messages
        if m.get("role") == "assistant" and isinstance(m.get("tool_calls"), list)
    )


_QUOTED = re.compile(r'"([^"\n]+)"|“([^”\n]+)”')


def judge_verdict(request: ChatRequest, text: str) -> str | None:
    """The JSON verdict on glmrun's judge request, else None: pass when the reply holds every
    "quoted" phrase of the rubric, exactly; a rubric without a quoted phrase fails.

    The request is `expectations.build_judge_prompt`'s: a system message, then the rubric and
    the reply in tags. Read with partitions, not a regex that could backtrack on a long reply;
    the reply may itself hold `</reply>`, so it runs to the last one.
    """
    roles = [m.get("role") for m in request.messages]
    if roles != ["system", "user"] or not text.startswith("<rubric>"):
        return None
    rubric, sep, rest = text[len("<rubric>"):].partition("\n</rubric>\n\n<reply>\n")
    reply, end, tail = rest.rpartition("\n</reply>\n\n")
    if not sep or not end or "\n" in tail or (rubric and not rubric.startswith("\n")):
        return None
    phrases = [a or b for a, b in _QUOTED.findall(rubric)]
    missing = [p for p in phrases if p not in reply]
    if not phrases:
        passed, reason = False, 'the emulator grades a rubric by its "quoted" phrases; it has none'
    elif missing:
        passed, reason = False, "the reply lacks " + ", ".join(f'"{p}"' for p in missing)
    else:
        passed, reason = True, "the reply holds " + ", ".join(f'"{p}"' for p in phrases)
    return json.dumps({"pass": passed, "reason": reason}, ensure_ascii=False)


def _apply_stop(content: str, stop: object) -> str:
    words = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    for word in words:
        if isinstance(word, str) and word and word in content:
            content = content[: content.index(word)]
    return content


def build_reply(
    request: ChatRequest, *, script: ScriptedReply | None = None, fault: str | None = None
) -> Reply:
    """The deterministic answer to a request.

    Content: a scripted reply if given; else the verdict on glmrun's judge request (see
    `judge_verdict`); else the k-th `[[tool:...]]` round (k = assistant messages with
    tool_calls since the last user message) when the request offers function tools; else
    `Tool results: ...` once tool messages follow the last user message; else the greeting for
    `你好`, or `Echo: <text> (<N> messages)`; `json_object` turns the last two into JSON.
    `stop` cuts the content before the stop word; `max_tokens` (counted in characters)
    truncates it with finish_reason "length".

    Usage: prompt_tokens = characters of every message's text // 2 + 1; completion_tokens =
    characters of content + reasoning_content + each tool call's name and arguments.
    """
    body = request.body
    d = request.directives
    after = request.after_last_user
    reasoning = f"Thinking about: {d.text}" if _wants_thinking(body) else None
    specs: tuple[ToolCallSpec, ...] = ()
    content: str | None
    finish = "stop"
    if script is not None:
        content, specs = script.content, script.tool_calls
        reasoning = script.reasoning_content
        finish = script.finish_reason or ("tool_calls" if specs else "stop")
    else:
        round_k = sum(1 for m in after if m.get("role") == "assistant" and m.get("tool_calls"))
        results = [m for m in after if m.get("role") == "tool"]
        n = len(request.messages)
        verdict = judge_verdict(request, d.text)
        if verdict is not None:
            content = verdict
        elif _has_function_tools(body) and round_k < len(d.tool_rounds):
            specs = d.tool_rounds[round_k]
            content, finish = None, "tool_calls"
        elif results:
            texts = [message_text(m.get("content")) for m in results]
            content = (
                json.dumps({"tool_results": texts, "messages": n}, ensure_ascii=False)
                if _wants_json(body)
                else "Tool results: " + "; ".join(texts)
            )
        elif _wants_json(body):
            content = json.dumps({"echo": d.text, "messages": n}, ensure_ascii=False)
        elif d.text == GREETING_PROMPT:
            content = GREETING_REPLY
        else:
            content = f"Echo: {d.text} ({n} messages)"
        if content is not None:
            content = _apply_stop(content, body.get("stop"))
            max_tokens = body.get("max_tokens")
            if isinstance(max_tokens, int) and 0 < max_tokens < len(content):
                content, finish = content[:max_tokens], "length"
    first_id = _issued_calls(request.messages) + 1
    calls = tuple(
        ToolCall(f"call_{first_id + i}", s.name, s.arguments) for i, s in enumerate(specs)
    )
    if fault in FINISH_FAULTS:
        finish = FINISH_FAULTS[fault]
    completion = (
        len(content or "")
        + len(reasoning or "")
        + sum(len(c.name) + len(c.arguments) for c in calls)
    )
    known = models.find(request.model)
    return Reply(
        content=content,
        finish_reason=finish,
        prompt_tokens=_prompt_chars(request.messages) // 2 + 1,
        completion_tokens=completion,
        reasoning_content=reasoning,
        tool_calls=calls,
        cached_tokens=_cached_tokens(request.messages) if known and known.caching else None,
        web_search=_citations(body, d.text),
    )


def _citations(body: Mapping[str, Any], text: str) -> tuple[JsonObject, ...]:
    """With an enabled web_search tool (and search_result not false), two cited pages about
    the search query (or the user's text), in the shape of Zhipu's `web_search` block."""
    tools = body.get("tools")
    found = [t.get("web_search") for t in tools if isinstance(t, Mapping)
             and t.get("type") == "web_search"] if isinstance(tools, list) else []
    search = found[0] if found else None
    if not isinstance(search, Mapping) or search.get("enable") is False or search.get(
        "search_result"
    ) is False:
        return ()
    query = str(search.get("search_query") or text)
    return tuple(
        {"refer": f"ref_{i}", "title": f"{query} ({i})", "link": f"https://example.com/{i}",
         "media": "example.com", "content": f"Page {i} about {query}",
         "icon": "", "publish_date": "2026-12-01"}
        for i in (1, 2)
    )


def _cached_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Context caching, deterministically: everything up to the last assistant message was
    sent before (a later turn or tool round repeats it), so its tokens are cache hits."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    return _prompt_chars(messages[: last + 1]) // 2


# --------------------------------------------------------------------------- wire JSON


def usage_json(reply: Reply) -> JsonObject:
    """Zhipu's usage: the details objects where the model reports them (cached prompt tokens
    for models with context caching, reasoning tokens when the reply reasoned)."""
    usage: JsonObject = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.total_tokens,
    }
    if reply.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
    if reply.reasoning_content:
        usage["completion_tokens_details"] = {"reasoning_tokens": reply.reasoning_tokens}
    return usage


def message_json(reply: Reply) -> JsonObject:
    message: JsonObject = {"role": "assistant", "content": reply.content}
    if reply.reasoning_content is not None:
        message["reasoning_content"] = reply.reasoning_content
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in reply.tool_calls
        ]
    return message


def choices_json(reply: Reply) -> list[JsonObject]:
    return [{"index": 0, "finish_reason": reply.finish_reason, "message": message_json(reply)}]


def completion_json(
    reply: Reply, *, completion_id: str, request_id: str, created: int, model: str
) -> JsonObject:
    """The body of a sync `/chat/completions` answer (and of a batch output line)."""
    return {
        "id": completion_id,
        "request_id": request_id,
        "created": created,
        "model": model,
        "choices": choices_json(reply),
        "usage": usage_json(reply),
        **({"web_search": list(reply.web_search)} if reply.web_search else {}),
    }


def split_text(text: str) -> Iterator[str]:
    """Pieces of 1, 2, 3, 1, 2, 3 ... characters (code points, so Chinese and emoji stay whole)."""
    pos, size = 0, 1
    while pos < len(text):
        yield text[pos : pos + size]
        pos += size
        size = size % 3 + 1


@dataclass(frozen=True)
class StreamPlan:
    """The chunks of one SSE answer: `body` deltas, then `final` (finish_reason + usage)."""

    body: tuple[JsonObject, ...]
    final: JsonObject


def stream_plan(
    reply: Reply, *, completion_id: str, created: int, model: str, tool_stream: bool = False
) -> StreamPlan:
    """Reasoning deltas first, then content, then tool calls by index; usage only in the final
    chunk. Each call arrives whole in one delta, or with `tool_stream` as the real API streams
    it: id and name in a first delta, then the arguments in pieces."""

    def chunk(delta: JsonObject) -> JsonObject:
        return {
            "id": completion_id,
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": {"role": "assistant", **delta}}],
        }

    body: list[JsonObject] = []
    body += [chunk({"reasoning_content": p}) for p in split_text(reply.reasoning_content or "")]
    body += [chunk({"content": p}) for p in split_text(reply.content or "")]
    for i, call in enumerate(reply.tool_calls):
        head = {"index": i, "id": call.id, "type": "function"}
        if not tool_stream:
            body.append(chunk({"tool_calls": [{**head, "function": {
                "name": call.name, "arguments": call.arguments}}]}))
            continue
        body.append(chunk({"tool_calls": [{**head, "function": {"name": call.name,
                                                                "arguments": ""}}]}))
        for piece in _pieces(call.arguments, 4):
            body.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    final = {
        "id": completion_id,
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": reply.finish_reason,
                "delta": {"role": "assistant", "content": ""},
            }
        ],
        "usage": usage_json(reply),
        **({"web_search": list(reply.web_search)} if reply.web_search else {}),
    }
    return StreamPlan(tuple(body), final)


def _pieces(text: str, size: int) -> Iterator[str]:
    for pos in range(0, len(text), size):
        yield text[pos : pos + size]


# --------------------------------------------------------------------------- gzip bomb


class _Bits:
    """Deflate's bit order: fields LSB first, Huffman codes MSB first (RFC 1951 3.1.1)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self._acc = 0
        self._n = 0

    def put(self, value: int, nbits: int) -> None:
        self._acc |= value << self._n
        self._n += nbits
        while self._n >= 8:
            self.out.append(self._acc & 0xFF)
            self._acc >>= 8
            self._n -= 8

    def code(self, code: int, nbits: int) -> None:
        self.put(int(format(code, f"0{nbits}b")[::-1], 2), nbits)

    def literal(self, byte: int) -> None:  # the fixed literal/length code (3.2.6)
        if byte <= 143:
            self.code(0x30 + byte, 8)
        else:
            self.code(0x190 + byte - 144, 9)

    def repeat_258(self) -> None:  # length 258 (code 285), distance 1 (code 0)
        self.code(0xC5, 8)
        self.code(0, 5)

    def end(self) -> bytes:
        self.code(0, 7)  # end of block
        if self._n:
            self.out.append(self._acc & 0xFF)
        return bytes(self.out)


@functools.lru_cache(maxsize=4)
def _bomb_padding(size: int) -> tuple[bytes, int, int, int]:
    """The start of a deflate stream of about `size` spaces: (bytes up to the repeated
    part, times the 13-byte pattern repeats, matches left over, exact number of spaces).
    Each 258-byte match costs 13 bits, so 8 of them are exactly 13 bytes: the middle of the
    stream is one pattern repeated, and a gigabyte takes ~7 MB and no compression time."""
    head = _Bits()
    head.put(1, 1)  # BFINAL
    head.put(1, 2)  # BTYPE 01: fixed Huffman codes
    head.literal(0x20)
    head.repeat_258()  # 3 + 8 + 13 = 24 bits: byte-aligned from here on
    matches = max(1, (size - 1) // 258)
    repeats, rest = divmod(matches - 1, 8)
    return bytes(head.out), repeats, rest, 1 + 258 * matches


@functools.lru_cache(maxsize=4)
def _spaces_crc(n: int) -> int:
    block = b" " * (1 << 20)
    crc = 0
    for _ in range(n >> 20):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(block[: n & ((1 << 20) - 1)], crc)


_PATTERN: bytes = b""


def gzip_bomb(tail: bytes, size: int) -> bytes:
    """A gzip body that decodes to ~`size` spaces followed by `tail`: valid JSON once decoded
    (leading whitespace), or valid SSE when `tail` starts with a newline (a line of spaces
    is no field). One line, so a client's cost is its memory, not millions of lines."""
    global _PATTERN
    if not _PATTERN:
        bits = _Bits()
        for _ in range(8):
            bits.repeat_258()
        _PATTERN = bytes(bits.out)
    head, repeats, rest, spaces = _bomb_padding(size)
    last = _Bits()
    for _ in range(rest):
        last.repeat_258()
    for byte in tail:
        last.literal(byte)
    crc = zlib.crc32(tail, _spaces_crc(spaces))
    length = (spaces + len(tail)) & 0xFFFFFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = crc.to_bytes(4, "little") + length.to_bytes(4, "little")
    return header + head + _PATTERN * repeats + last.end() + trailer
