"""What a model replies: deterministic content, tool calls, reasoning, usage and citations.

Nothing here does I/O; `http.py` sends what `build_reply` decides, shaped by `wire.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from glmrun import models

from .errors import JsonObject
from .markers import FINISH_FAULTS, ToolCallSpec
from .requests import ChatRequest, message_text, prompt_chars, prompt_tokens

GREETING_PROMPT = "你好"
GREETING_REPLY = (
    "你好👋！我是人工智能助手智谱清言（ChatGLM），可以叫我小智🤖，很高兴见到你，欢迎问我任何问题。"
)


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
    content_filter: tuple[JsonObject, ...] = ()  # `[[content_filter:...]]`: role and level

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
        prompt_tokens=prompt_tokens(request.messages),
        completion_tokens=completion,
        reasoning_content=reasoning,
        tool_calls=calls,
        cached_tokens=_cached_tokens(request.messages) if known and known.caching else None,
        web_search=_citations(body, d.text),
        content_filter=tuple(dict(f) for f in d.content_filter),
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
    return prompt_chars(messages[: last + 1]) // 2
