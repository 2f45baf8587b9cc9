"""Markers in the last user message, and the faults they name.

Markers are read from the text of the last user message (and stripped from what is echoed):

    [[fault:NAME]]   [[fault:NAMExN]]   [[latency:MS]]   [[chunk_delay:MS]]   [[async_polls:N]]
    [[tool:NAME ARGS]]   [[tool:NAME ARGS | NAME ARGS]]   [[content_filter:LEVEL]]
    [[content_filter:ROLE:LEVEL]]

With several fault markers, the first one that still fires wins, so `[[fault:500x1]]
[[fault:429x1]]` answers 500, then 429, then succeeds.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Literal

from .errors import STATUS_FAULTS, invalid

RequestKind = Literal["sync", "stream", "async", "batch"]

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
FILTER_ROLES = ("user", "assistant", "history")  # the sides Zhipu's content filter reports


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
    """`500x2` -> ("500", 2); `500` -> ("500", None); raises WireError (1210) for unknown names."""
    m = re.fullmatch(r"(.+?)x(\d+)", text)
    if m and m.group(1) in FAULT_NAMES:
        return m.group(1), int(m.group(2))
    if text in FAULT_NAMES:
        return text, None
    raise invalid(f"mock: unknown fault {text!r}; known: {sorted(FAULT_NAMES)}")


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
    content_filter: tuple[dict[str, object], ...] = ()  # the reply's `content_filter` block


_MARKER_START = re.compile(r"\[\[(fault|latency|chunk_delay|async_polls|tool|content_filter):")


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
        raise invalid(f"mock: [[{kind}:{value}]] needs a number") from None
    if number < 0:
        raise invalid(f"mock: [[{kind}:{value}]] must not be negative")
    return number


def parse_directives(text: str) -> Directives:
    """Read and strip the markers of one message text; WireError 400 on a malformed marker."""
    faults: list[FaultMarker] = []
    rounds: list[tuple[ToolCallSpec, ...]] = []
    values: dict[str, float] = {}
    filters: list[dict[str, object]] = []
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
        elif kind == "content_filter":
            filters.append(_content_filter(body.strip()))
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
        content_filter=tuple(filters),
    )


def _content_filter(body: str) -> dict[str, object]:
    """`2` or `user:2` -> `{"role": ..., "level": 2}`: Zhipu's content filter reports the side it
    judged (user input, assistant output, or history) and a level from 0 (most severe) to 3."""
    role, _, level = body.rpartition(":")
    role = role or "assistant"
    if role not in FILTER_ROLES or level not in ("0", "1", "2", "3"):
        raise invalid(f"mock: [[content_filter:{body}]] needs LEVEL 0-3, optionally ROLE:LEVEL "
                      f"with ROLE one of {', '.join(FILTER_ROLES)}")
    return {"role": role, "level": int(level)}


class FaultLedger:
    """Counts `xN` faults per conversation so that a retried request eventually succeeds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fired: dict[tuple[str, str], int] = {}

    def pick(self, directives: Directives, conversation_key: str,
             kind: RequestKind) -> str | None:
        """The fault this request suffers, consuming one count of an `xN` marker."""
        for marker in directives.faults:
            if not fault_applies(marker.name, kind):
                continue
            if marker.limit is None:
                return marker.name
            key = (conversation_key, marker.text)
            with self._lock:
                fired = self._fired.get(key, 0)
                if fired < marker.limit:
                    self._fired[key] = fired + 1
                    return marker.name
        return None
