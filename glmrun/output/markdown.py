"""The Markdown view of a transcript, for people: header table, messages, calls, expectations,
error. Also the inline helpers the diff and matrix tables share (`md_inline`, `md_code`, ...).

One is rendered for every conversation of a run, so the helpers take the common case (nothing
to escape) without a regular expression.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

STATUS_EMOJI: Mapping[str, str] = {"passed": "✅", "failed": "❌", "error": "⚠️"}
# each special character gets a backslash: one C-level pass instead of a regex substitution
_INLINE_ESCAPES = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|~#&"})
_TICKS = re.compile(r"`+")
_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def md_inline(text: str) -> str:
    """`text` as literal Markdown inline text: one line, every special character escaped."""
    return " ".join(str(text).split()).translate(_INLINE_ESCAPES)


def _longest_ticks(text: str) -> int:
    return max(map(len, _TICKS.findall(text)), default=0) if "`" in text else 0


def md_code(text: str) -> str:
    """`text` as an inline code span, whatever backticks it holds."""
    text = " ".join(str(text).splitlines())
    ticks = "`" * (_longest_ticks(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def md_cell(text: str) -> str:
    """Already-rendered inline Markdown made safe for a table cell (GFM needs `|` escaped)."""
    return _UNESCAPED_PIPE.sub(r"\\|", text) if "|" in text else text


def md_fence(text: str, info: str = "") -> str:
    """A fenced code block holding `text` verbatim: the fence outruns any backticks inside."""
    ticks = "`" * max(3, _longest_ticks(text) + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{ticks}{info}\n{body}{ticks}"


def _indent(block: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else "" for line in block.split("\n"))


def format_ms(ms: float | None) -> str:
    """A duration for people: 812 ms, 1.20 s."""
    if ms is None:
        return "–"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _pretty_arguments(arguments: str) -> tuple[str, str]:
    """Tool arguments indented when they are valid JSON, else verbatim (and say which)."""
    try:
        return json.dumps(json.loads(arguments), ensure_ascii=False, indent=2), "json"
    except ValueError:
        return arguments, "text"


def _render_content(content: object) -> list[str]:
    if content is None:
        return ["*(no content)*"]
    if isinstance(content, str):
        return [md_fence(content, "text")] if content else ["*(empty)*"]
    if isinstance(content, list):
        blocks = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                blocks.append(md_fence(str(part.get("text", "")), "text"))
            else:
                blocks.append(md_fence(_compact_json(_shorten_data_urls(part)), "json"))
        return blocks or ["*(empty)*"]
    return [md_fence(str(content), "text")]


_BASE64 = re.compile(r"[A-Za-z0-9+/=]{81,}")


def _shorten_data_urls(value: Any) -> Any:
    """Inline images (data: URLs, or bare base64 as sent) cut short: base64 is no use to a
    reader."""
    if isinstance(value, str) and len(value) > 80 and (
        value.startswith("data:") or _BASE64.fullmatch(value)
    ):
        return f"{value[:40]}… ({len(value)} characters)"
    if isinstance(value, Mapping):
        return {k: _shorten_data_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten_data_urls(v) for v in value]
    return value


def _error_line(error: Mapping[str, Any]) -> str:
    bits = [f"**{md_inline(str(error.get('kind', 'error')))}**"]
    if error.get("status") is not None:
        bits.append(f"HTTP {error['status']}")
    if error.get("code") is not None:
        bits.append(f"code {md_inline(str(error['code']))}")
    return " · ".join(bits)


def _case_name(case: Mapping[str, Any]) -> str:
    """The case as its run id names it: its `id` column, else `caseN` (N its 1-based row)."""
    from glmrun.plan.ids import case_key

    index, row = case.get("index"), case.get("vars")
    if not isinstance(index, int) or not isinstance(row, Mapping):
        return str(index)
    return case_key(row, index)


def _usage_text(usage: Mapping[str, Any] | None) -> str:
    if not usage:
        return "–"
    prompt = f"{usage.get('prompt_tokens', 0)} prompt"
    if usage.get("cached_tokens"):
        prompt += f" ({usage['cached_tokens']} cached)"
    completion = f"{usage.get('completion_tokens', 0)} completion"
    if usage.get("reasoning_tokens"):
        completion += f" ({usage['reasoning_tokens']} reasoning)"
    return f"{usage.get('total_tokens', 0)} ({prompt} + {completion})"


def _render_header(t: Mapping[str, Any]) -> list[str]:
    status = str(t.get("status", ""))
    out = [f"# {STATUS_EMOJI.get(status, '❔')} {md_inline(str(t.get('name', '')))}"]
    if t.get("description"):
        out.append(md_inline(str(t["description"])))
    calls = t.get("calls") or []
    latency = sum(float(c.get("latency_ms") or 0) for c in calls)
    source = t.get("source") or {}
    where = str(source.get("file", ""))
    if source.get("line") is not None:
        where += f":{source['line']}"
    rows: list[tuple[str, str]] = [
        ("Run", md_code(str(t.get("id", "")))),
        ("Status", f"{STATUS_EMOJI.get(status, '❔')} {md_inline(status)}"),
        ("Model", md_code(str(t.get("model", "")))),
        ("Mode", md_inline(str(t.get("mode", "")))),
        ("Source", md_code(where)),
    ]
    case = t.get("case")
    if isinstance(case, Mapping):
        shown = f"{md_code(_case_name(case))}: {md_code(_compact_json(case.get('vars')))}"
        rows.append(("Case", shown))
    repeat = t.get("repeat")
    if isinstance(repeat, Mapping):
        rows.append(("Repeat", f"{int(repeat.get('index', 0)) + 1} of {repeat.get('of')}"))
    if t.get("tags"):
        rows.append(("Tags", ", ".join(md_code(str(tag)) for tag in t["tags"])))
    rows += [
        ("Tokens", _usage_text(t.get("usage"))),
        *([("Cost", f"¥{float(t['cost']):.6g}")] if t.get("cost") is not None else []),
        ("Latency", f"{format_ms(latency)} in {len(calls)} call{'s' if len(calls) != 1 else ''}"),
        ("Duration", format_ms(t.get("duration_ms"))),
        ("Started", md_inline(str(t.get("started_at", "")))),
    ]
    table = ["| Field | Value |", "| --- | --- |"]
    table += [f"| {name} | {md_cell(value)} |" for name, value in rows]
    out.append("\n".join(table))
    return out


def _render_messages(t: Mapping[str, Any]) -> list[str]:
    results = {r.get("id"): r for r in t.get("tool_results") or [] if isinstance(r, Mapping)}
    out = ["## Conversation"]
    for message in t.get("messages") or []:
        role = str(message.get("role", ""))
        label = f"**{md_inline(role)}**"
        result = results.get(message.get("tool_call_id")) if role == "tool" else None
        if role == "tool":
            bits = [md_code(str(message.get("tool_call_id", "")))]
            if result is not None:
                bits.insert(0, md_code(str(result.get("name", ""))))
                bits.append(format_ms(result.get("duration_ms")))
            label += " · " + " · ".join(bits)
        out.append(label)
        if message.get("reasoning_content"):
            out.append("<details><summary>Reasoning</summary>\n\n"
                       + md_fence(str(message["reasoning_content"]), "text")
                       + "\n\n</details>")
        out += _render_content(message.get("content"))
        if result is not None and result.get("error"):
            out.append("Tool error:\n\n" + md_fence(str(result["error"]), "text"))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments, lang = _pretty_arguments(str(function.get("arguments", "")))
            out.append(f"Tool call {md_code(str(function.get('name', '')))} "
                       f"({md_code(str(call.get('id', '')))}):\n\n" + md_fence(arguments, lang))
    return out


def _call_notes(call: Mapping[str, Any]) -> str:
    notes = []
    if call.get("cached"):
        notes.append("cached")
    if call.get("chunks") is not None:
        notes.append(f"{call['chunks']} chunks")
    if call.get("task_id"):
        notes.append(f"task {md_code(str(call['task_id']))}")
    if call.get("polls") is not None:
        notes.append(f"{call['polls']} polls")
    if call.get("queue_ms") is not None:
        notes.append(f"queued {format_ms(call['queue_ms'])}")
    if call.get("retries"):
        n = len(call["retries"])
        notes.append(f"{n} retr{'ies' if n != 1 else 'y'}")
    return ", ".join(notes)


def _call_tokens(usage: Mapping[str, Any]) -> str:
    """`prompt + completion = total`, with the cached and reasoning parts when reported."""
    text = (f"{usage.get('prompt_tokens', 0)} + {usage.get('completion_tokens', 0)} = "
            f"{usage.get('total_tokens', 0)}")
    details = [f"{usage[k]} {k.removesuffix('_tokens')}"
               for k in ("cached_tokens", "reasoning_tokens") if usage.get(k)]
    return text + (f" ({', '.join(details)})" if details else "")


def _render_calls(t: Mapping[str, Any]) -> list[str]:
    calls = t.get("calls") or []
    if not calls:
        return []
    table = [
        "| # | Turn | Round | Finish | Tokens | Latency | TTFT | Request | Notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    retries = []
    for n, call in enumerate(calls, 1):
        usage = call.get("usage")
        tokens = _call_tokens(usage) if usage else "–"
        request = md_code(str(call["request_id"])) if call.get("request_id") else "–"
        cells = [str(n), str(call.get("turn")), str(call.get("round")),
                 md_inline(str(call.get("finish_reason") or "–")), tokens,
                 format_ms(call.get("latency_ms")), format_ms(call.get("ttft_ms")), request,
                 _call_notes(call)]
        table.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
        for retry in call.get("retries") or []:
            error = retry.get("error") or {}
            retries.append(f"- call {n}, attempt {retry.get('attempt')}: {_error_line(error)}: "
                           f"{md_inline(str(error.get('message', '')))} "
                           f"(waited {format_ms(retry.get('wait_ms'))})")
    out = ["## Calls", "\n".join(table)]
    if retries:
        out.append("Retries:\n\n" + "\n".join(retries))
    return out


def _render_expectations(t: Mapping[str, Any]) -> list[str]:
    expectations = t.get("expectations") or []
    if not expectations:
        return []
    passed = sum(1 for e in expectations if e.get("passed"))
    items = []
    for e in expectations:
        line = f"- [{'x' if e.get('passed') else ' '}] **{md_inline(str(e.get('kind', '')))}**"
        if e.get("name"):
            line += f" {md_code(str(e['name']))}"
        if e.get("turn") is not None:
            line += f" · turn {e['turn']}"
        line += f": {md_inline(str(e.get('reason', '')))}"
        if not e.get("passed") and e.get("diff"):
            line += "\n\n" + _indent(md_fence(str(e["diff"]), "diff"))
        items.append(line)
    return [f"## Expectations ({passed}/{len(expectations)} passed)", "\n".join(items)]


def _render_error(t: Mapping[str, Any]) -> list[str]:
    error = t.get("error")
    if not isinstance(error, Mapping):
        return []
    return ["## Error", _error_line(error), md_fence(str(error.get("message", "")), "text")]


def render_markdown(data: Mapping[str, Any]) -> str:
    """The transcript for people: header table, messages, calls, expectations, error."""
    blocks = [
        *_render_header(data),
        *_render_messages(data),
        *_render_calls(data),
        *_render_expectations(data),
        *_render_error(data),
    ]
    return "\n\n".join(blocks) + "\n"
