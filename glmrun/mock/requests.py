"""What a chat request says: checked as the real API checks it, its markers read, its text.

Written from Zhipu's chat completion reference (https://docs.bigmodel.cn/api-reference/模型-api/对话补全,
English https://docs.z.ai/api-reference/llm/chat-completion) and the error-code table
(https://docs.bigmodel.cn/cn/api/api-code).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from glmrun import models

from .errors import WireError, invalid
from .markers import Directives, parse_directives

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
        elif kind == "input_audio":
            audio = part.get("input_audio")
            audio = audio if isinstance(audio, Mapping) else {}
            media.append(f" [audio {audio.get('format', 'unknown')} "
                         f"{len(str(audio.get('data', '')))} base64 characters]")
    return " ".join(texts) + "".join(media)


def prompt_chars(messages: Sequence[Mapping[str, Any]]) -> int:
    """Characters of every message's text (media described): what prompt tokens count."""
    return sum(len(message_text(m.get("content"))) for m in messages)


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The emulator's token count of a prompt, the same for a chat reply and the tokenizer."""
    return prompt_chars(messages) // 2 + 1


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


def check_model_and_messages(body: object) -> tuple[str, tuple[Mapping[str, Any], ...]]:
    """`model` and `messages` as the API checks them (chat and tokenizer alike): 1210, 1214,
    and the media parts the model cannot take (1210)."""
    if not isinstance(body, Mapping):
        raise invalid("body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError(400, "1214", "messages 参数非法。请检查文档。")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in (
            "system", "user", "assistant", "tool",
        ):
            raise WireError(400, "1214", f"messages[{i}] 参数非法。请检查文档。")
    _check_capabilities(model, messages)
    return model, tuple(messages)


def parse_chat_request(body: object) -> ChatRequest:
    """Check what the real API checks first (model, messages, stop) and read the markers."""
    model, msgs = check_model_and_messages(body)
    assert isinstance(body, Mapping)
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > 1:
        raise invalid("stop takes one string")
    _check_thinking_params(body)
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
    """Content parts a model of the table does not take: images, files and audio on a
    text-only model, video on a model without video understanding (the table knows no more
    about audio). 1210, the code for wrong parameters: Zhipu's table gives no code of its own
    for this. Models outside the table take anything."""
    known = models.find(model)
    if known is None:
        return
    takes = {"text", *(("image_url", "file_url", "input_audio") if known.vision else ()),
             *(("video_url",) if known.video else ())}
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        kinds = {str(p.get("type")) for p in content if isinstance(p, Mapping)} if isinstance(
            content, list) else set()
        refused = sorted(kinds & {"image_url", "video_url", "file_url", "input_audio"} - takes)
        if refused:
            raise invalid(f"messages[{i}]: {model} does not take {', '.join(refused)}")


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def _check_thinking_params(body: Mapping[str, Any]) -> None:
    """`thinking`, `reasoning_effort`, `tool_stream` and `watermark_enabled` as documented."""
    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, Mapping) or thinking.get("type") not in (
            "enabled", "disabled",
        ):
            raise invalid("thinking.type must be enabled or disabled")
        clear = thinking.get("clear_thinking")
        if clear is not None and not isinstance(clear, bool):
            raise invalid("thinking.clear_thinking must be a boolean")
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise invalid(f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}")
    for flag in ("tool_stream", "watermark_enabled"):
        value = body.get(flag)
        if value is not None and not isinstance(value, bool):
            raise invalid(f"{flag} must be a boolean")
