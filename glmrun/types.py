"""The values that cross the backend seam: what glmrun asks a model, and what it answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["sync", "stream", "async", "batch"]
CallMode = Literal["sync", "stream", "async"]
MODES: tuple[str, ...] = ("sync", "stream", "async", "batch")

# The SDK sends its requests here, relative to the base URL; --dry-run shows them.
ENDPOINTS: Mapping[str, str] = {
    "sync": "POST /chat/completions",
    "stream": "POST /chat/completions (stream)",
    "async": "POST /async/chat/completions, then GET /async-result/{id}",
    "batch": "POST /files + POST /batches (JSONL line: POST /v4/chat/completions)",
}


@dataclass(frozen=True)
class ChatRequest:
    """One call of chat.completions.create, JSON-ready: exactly what glmrun hands the SDK.

    `params` holds every keyword besides model and messages (temperature, tools, ...), already
    rendered and stripped of glmrun-only keys. `body()` is the request body as sent on the wire
    (before the SDK's own clamping of temperature/top_p).
    """

    model: str
    messages: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    mode: CallMode = "sync"

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in self.messages]}
        out.update(self.params)
        if self.mode == "stream":
            out["stream"] = True
        return out


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the raw JSON text the model produced; may be invalid JSON
    type: str = "function"

    def to_message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class Usage:
    """Token counts as the API reports them; `cached_tokens` (of the prompt, from
    prompt_tokens_details) and `reasoning_tokens` (of the completion, from
    completion_tokens_details) are parts of the first two, not extra tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        """The counts as the transcript records them (what dataclasses.asdict gives, without
        its recursive deep copy: this runs for every call and conversation)."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens, "cached_tokens": self.cached_tokens,
                "reasoning_tokens": self.reasoning_tokens}

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed reply, handed to the live display as it arrives."""

    content: str = ""
    reasoning_content: str = ""


@dataclass(frozen=True)
class Reply:
    """A model's complete answer to one ChatRequest, with what we measured getting it."""

    content: str | None
    finish_reason: str | None
    usage: Usage | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    id: str | None = None
    request_id: str | None = None
    model: str | None = None
    latency_ms: float = 0.0
    # stream mode
    ttft_ms: float | None = None
    chunks: int | None = None
    chunk_offsets_ms: tuple[float, ...] | None = None
    # async mode
    task_id: str | None = None
    polls: int | None = None
    queue_ms: float | None = None
    # record/replay
    cached: bool = False
    # reply blocks besides the message: web_search (the citations of a web_search tool) and
    # content_filter ({role, level} of Zhipu's safety review), as the API sent them
    web_search: tuple[Mapping[str, Any], ...] = ()
    content_filter: tuple[Mapping[str, Any], ...] = ()

    def to_message(self, *, with_reasoning: bool = False) -> dict[str, Any]:
        """The assistant message that joins the history for the next request.

        `with_reasoning` sends the reply's reasoning_content back, as Zhipu asks of tool
        rounds (interleaved thinking) and of every turn when `thinking.clear_thinking` is false
        (preserved thinking).
        """
        msg: dict[str, Any] = {"role": "assistant", "content": self.content or ""}
        if with_reasoning and self.reasoning_content:
            msg["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            msg["tool_calls"] = [tc.to_message() for tc in self.tool_calls]
        return msg
