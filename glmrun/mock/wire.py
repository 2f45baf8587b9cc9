"""The wire JSON of a reply: sync bodies, batch lines, async results and SSE chunks.

Shapes from the SDK's types (zhipuai/types/chat/chat_completion.py, chat_completion_chunk.py)
and Zhipu's chat completion reference, which adds `web_search` and `content_filter` beside
`choices` and the usage details.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .behaviour import Reply
from .errors import JsonObject


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
        **extras_json(reply),
    }


def extras_json(reply: Reply) -> JsonObject:
    """The blocks beside `choices`: `web_search` (citations) and `content_filter` (a list of
    `{role, level}`, the side the filter judged and how severe, 0 worst to 3 mildest; Zhipu's
    content-safety page https://docs.bigmodel.cn/cn/guide/platform/securityaudit)."""
    extras: JsonObject = {}
    if reply.web_search:
        extras["web_search"] = list(reply.web_search)
    if reply.content_filter:
        extras["content_filter"] = list(reply.content_filter)
    return extras


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
        **extras_json(reply),
    }
    return StreamPlan(tuple(body), final)


def _pieces(text: str, size: int) -> Iterator[str]:
    for pos in range(0, len(text), size):
        yield text[pos : pos + size]
