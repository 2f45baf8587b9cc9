"""Transcripts: the JSON form of one conversation run, written atomically, and its Markdown view.

The JSON form is documented by `schemas/transcript.schema.json`; the TypedDicts below mirror it
for type checkers. `write_transcript` never leaves a half-written file: each file is written to a
temporary sibling, fsynced and renamed, and the JSON file (the one `--resume` looks at) last.
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

from glmrun.safety import finite
from glmrun.safety.atomic import write_atomically
from glmrun.safety.redaction import Redactor
from glmrun.types import Usage

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

Status = Literal["passed", "failed", "error"]
Role = Literal["system", "user", "assistant", "tool"]
Format = Literal["json", "md"]

STATUSES: tuple[Status, ...] = ("passed", "failed", "error")
TRANSCRIPT_VERSION = 1
TRANSCRIPT_SCHEMA_PATH: Traversable = files("glmrun") / "schemas" / "transcript.schema.json"


# --- the JSON form ------------------------------------------------------------------------
# Optional keys live in `total=False` subclasses: `NotRequired` needs Python 3.11.


class SourceInfo(TypedDict):
    file: str
    sha256: str
    line: int | None


class CaseInfo(TypedDict):
    index: int
    vars: dict[str, Any]


class RepeatInfo(TypedDict):
    index: int
    of: int


class FunctionCall(TypedDict):
    name: str
    arguments: str


class ToolCallRecord(TypedDict):
    id: str
    type: str
    function: FunctionCall


class _MessageBase(TypedDict):
    role: Role
    content: str | list[dict[str, Any]] | None


class MessageRecord(_MessageBase, total=False):
    reasoning_content: str
    tool_calls: list[ToolCallRecord]
    tool_call_id: str


class _TokenUsageBase(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TokenUsage(_TokenUsageBase, total=False):
    cached_tokens: int
    reasoning_tokens: int


class ErrorRecord(TypedDict):
    kind: str
    code: str | None
    status: int | None
    message: str


class RetryRecord(TypedDict):
    attempt: int
    error: ErrorRecord
    wait_ms: float


class CallRecord(TypedDict):
    turn: int
    round: int
    endpoint: str
    content: str | None
    reasoning_content: str | None
    tool_calls: list[ToolCallRecord]
    finish_reason: str | None
    usage: TokenUsage | None
    id: str | None
    request_id: str | None
    task_id: str | None
    latency_ms: float
    ttft_ms: float | None
    chunks: int | None
    chunk_offsets_ms: list[float] | None
    polls: int | None
    queue_ms: float | None
    retries: list[RetryRecord]
    cached: bool
    started_at: str


class _ToolResultBase(TypedDict):
    turn: int
    round: int
    id: str
    name: str
    arguments: str
    result: str | None
    error: str | None
    duration_ms: float


class ToolResultRecord(_ToolResultBase, total=False):
    extracted: bool


class ExpectationRecord(TypedDict):
    turn: int | None
    kind: str
    name: str | None
    spec: dict[str, Any]
    passed: bool
    reason: str
    diff: str | None


class _TranscriptBase(TypedDict):
    transcript_version: int
    glmrun_version: str
    id: str
    name: str
    description: str | None
    source: SourceInfo
    case: CaseInfo | None
    repeat: RepeatInfo | None
    tags: list[str]
    variables: dict[str, Any]
    model: str
    mode: Literal["sync", "stream", "async", "batch"]
    base_url: str | None
    params: dict[str, Any]
    messages: list[MessageRecord]
    calls: list[CallRecord]
    tool_results: list[ToolResultRecord]
    expectations: list[ExpectationRecord]
    usage: TokenUsage
    status: Status
    error: ErrorRecord | None
    started_at: str
    finished_at: str
    duration_ms: float


class Transcript(_TranscriptBase, total=False):
    pass_rate: float
    cost: float | None
    extra: dict[str, Any]


# --- schema ---------------------------------------------------------------------------------


def load_transcript_schema() -> dict[str, Any]:
    """The transcript JSON Schema, read from the installed package (editable or wheel)."""
    return cast(dict[str, Any], json.loads(TRANSCRIPT_SCHEMA_PATH.read_text(encoding="utf-8")))


# --- redaction ------------------------------------------------------------------------------


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret (and each half of an `<id>.<secret>` key) replaced by ***."""
    return Redactor(secrets).text(text)


# --- writing and reading --------------------------------------------------------------------


class TranscriptWriter:
    """Writes transcripts on one background thread, in order, behind a bounded queue.

    Worker threads hand a finished conversation over and go on; the single writer keeps file
    creation (slow on some disks, and contended when fifty threads do it at once) off their
    path. After a write fails (disk full, ...), `submit()` answers False so the run stops
    starting conversations; `close()` drains the queue and returns the first OSError (any
    other exception is a bug and is raised).
    """

    _STOP: Any = object()

    def __init__(
        self, out_dir: Path, formats: Sequence[str], *, secrets: Sequence[str] | Redactor = (),
        queue_size: int = 256,
    ) -> None:
        self.out_dir, self.formats = out_dir, _checked(formats)
        self.redactor = secrets if isinstance(secrets, Redactor) else Redactor(secrets)
        self._folder = os.fspath(out_dir)
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="glmrun-writer", daemon=True)
        self._thread.start()

    def submit(self, data: Mapping[str, Any]) -> bool:
        """Queue a transcript; False (and nothing queued) once a write has failed."""
        if self._error is not None:
            return False
        self._queue.put(data)
        return True

    def close(self) -> OSError | None:
        """Write what is queued and stop; the first write error, if any (a bug is raised)."""
        self._queue.put(self._STOP)
        self._thread.join()
        error = self._error
        if error is None or isinstance(error, OSError):
            return error
        raise error

    def _loop(self) -> None:
        while (item := self._queue.get()) is not self._STOP:
            try:  # after a failure, each transcript already queued still gets its try
                _write(item, self._folder, self.formats, self.redactor, False)
            except BaseException as exc:  # reported by submit() / close()
                self._error = self._error or exc


def dumps_transcript(data: Mapping[str, Any]) -> str:
    """The JSON text of a transcript: UTF-8-ready, indented, keys in the order given.

    A NaN or infinity that reached it (a server reply's number, say: input files refuse them)
    is written as null, as JSON.stringify does, rather than losing the transcript.
    """
    try:
        return json.dumps(data, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    except ValueError:
        if finite.find_non_finite(data) is None:
            raise  # not a number problem: a bug
        return json.dumps(finite.nulled(data), ensure_ascii=False, indent=2,
                          allow_nan=False) + "\n"


def _check_id(run_id: object) -> str:
    if (
        not isinstance(run_id, str)
        or not run_id
        or run_id.startswith(".")
        or re.search(r'[/\\<>:"|?*\x00-\x1f]', run_id)
    ):
        raise ValueError(f"transcript id {run_id!r} cannot be a file name")
    return run_id


def write_transcript(
    data: Mapping[str, Any],
    out_dir: Path,
    formats: Sequence[str] = ("json", "md"),
    *,
    secrets: Sequence[str] | Redactor = (),
    durable: bool = False,
) -> list[Path]:
    """Write `<out_dir>/<id>.json` and/or `<id>.md` atomically; return the paths in `formats` order.

    Every secret (see glmrun.safety.redaction) is replaced by *** in both files. The JSON file is
    written last, so its presence means the Markdown one is complete too.
    """
    formats = _checked(formats)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = _write(data, os.fspath(out_dir), formats, secrets, durable)
    return [out_dir / f"{run_id}.{fmt}" for fmt in dict.fromkeys(formats)]


def _checked(formats: Sequence[str]) -> tuple[str, ...]:
    unknown = set(formats) - {"json", "md"}
    if unknown:
        raise ValueError(f"unknown transcript format(s): {', '.join(sorted(unknown))}")
    return tuple(formats)


def _write(
    data: Mapping[str, Any], out_dir: str, formats: Sequence[str],
    secrets: Sequence[str] | Redactor, durable: bool,
) -> str:
    """write_transcript's work, on plain strings (see atomic.write_atomically for why).

    Returns the transcript's id (its file stem).
    """
    run_id = _check_id(data.get("id"))
    text = dumps_transcript(data)
    redactor = secrets if isinstance(secrets, Redactor) else Redactor(secrets)
    # A secret's characters survive JSON escaping unless it holds a quote, a backslash or a
    # control character: then only the walk over the values can tell.
    dirty = bool(redactor) and (redactor.found_in(text) or not redactor.json_safe)
    clean = redactor.value(data) if dirty else data
    payloads: dict[str, bytes] = {}  # all rendered before any is written: no orphan .md
    if "md" in formats:
        # the values are clean; what Markdown adds around them is redacted by the long forms
        # only, so a short test key cannot rewrite the document's own words
        payloads["md"] = redactor.long.text(render_markdown(clean)).encode("utf-8", "replace")
    if "json" in formats:
        if dirty:
            text = dumps_transcript(clean)
        # backslashreplace turns a lone surrogate into a \udcxx escape, which is valid JSON
        payloads["json"] = text.encode("utf-8", "backslashreplace")
    for fmt, payload in payloads.items():  # JSON last
        target = os.path.join(out_dir, f"{run_id}.{fmt}")
        try:
            write_atomically(target, [payload], durable=durable)
        except FileNotFoundError:  # the folder went away mid-run: make it again, once
            os.makedirs(out_dir, exist_ok=True)
            write_atomically(target, [payload], durable=durable)
    return run_id


def read_transcript(path: Path) -> Transcript:
    """Load one JSON transcript (not validated against the schema; see validate_transcript)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a transcript (a JSON {type(data).__name__})")
    return cast(Transcript, data)


def _is_transcript(data: Mapping[str, Any]) -> bool:
    return "transcript_version" in data and data.get("status") in STATUSES


def read_complete(path: Path) -> Transcript | None:
    """The transcript in `path` if it is whole and has a final status, else None."""
    try:
        data = read_transcript(path)
    except (OSError, ValueError):  # missing, unreadable, truncated, not UTF-8
        return None
    return data if _is_transcript(data) else None


def is_complete(path: Path) -> bool:
    """True when `path` holds a whole transcript with a final status (what --resume trusts)."""
    return read_complete(path) is not None


def iter_transcripts(out_dir: Path) -> Iterator[Transcript]:
    """The complete transcripts in `out_dir`, by file name; other JSON files and temp files are
    skipped. One is loaded at a time."""
    for path in sorted(Path(out_dir).glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            data = read_transcript(path)
        except (OSError, ValueError):
            continue
        if _is_transcript(data):
            yield data


def text_of(content: object) -> str | None:
    """The text of a message's content: a string as is, the text parts of a list joined."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return str(content)


def final_reply(data: Mapping[str, Any]) -> str | None:
    """The text of the conversation's last assistant message, or None if the model never replied."""
    for message in reversed(data.get("messages") or []):
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            return text_of(message.get("content"))
    return None


# --- summary --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupSummary:
    """The repeats of one conversation and case: passed if enough of them passed."""

    name: str
    source_file: str
    case_index: int | None
    model: str
    mode: str
    runs: int
    passed: int
    pass_rate: float  # required share of passing runs

    @property
    def ok(self) -> bool:
        return self.passed >= self.pass_rate * self.runs - 1e-9


@dataclass(frozen=True)
class Summary:
    """Counts over a run's transcripts; `ok` when every group met its pass rate."""

    total: int
    passed: int
    failed: int
    errors: int
    usage: Usage
    duration_ms: float
    groups: tuple[GroupSummary, ...]

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.groups)

    @property
    def failed_groups(self) -> tuple[GroupSummary, ...]:
        return tuple(g for g in self.groups if not g.ok)


def summarize(transcripts: Iterable[Mapping[str, Any]]) -> Summary:
    """Count statuses and tokens, and judge repeats against their pass_rate (default 1.0).

    Transcripts that differ only in their repeat index form one group; a transcript without
    repeats is a group of one. Only counters are kept, so `transcripts` may be a generator.
    """
    counts = dict.fromkeys(STATUSES, 0)
    usage = Usage()
    duration = 0.0
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for t in transcripts:
        status = t.get("status")
        if status in counts:
            counts[status] += 1
        u = t.get("usage") or {}
        usage += Usage(
            int(u.get("prompt_tokens", 0)),
            int(u.get("completion_tokens", 0)),
            int(u.get("total_tokens", 0)),
            int(u.get("cached_tokens", 0)),
            int(u.get("reasoning_tokens", 0)),
        )
        duration += float(t.get("duration_ms", 0.0))
        source = t.get("source") or {}
        case = t.get("case")
        case_index = case.get("index") if isinstance(case, Mapping) else None
        key = (source.get("file"), source.get("line"), t.get("name"), case_index,
               t.get("model"), t.get("mode"))
        group = groups.setdefault(key, {"runs": 0, "passed": 0, "pass_rate": 0.0})
        group["runs"] += 1
        group["passed"] += status == "passed"
        group["pass_rate"] = max(group["pass_rate"], float(t.get("pass_rate", 1.0)))
    return Summary(
        total=sum(counts.values()),
        passed=counts["passed"],
        failed=counts["failed"],
        errors=counts["error"],
        usage=usage,
        duration_ms=duration,
        groups=tuple(
            GroupSummary(
                name=str(key[2]), source_file=str(key[0]), case_index=key[3],
                model=str(key[4]), mode=str(key[5]), runs=g["runs"], passed=g["passed"],
                pass_rate=g["pass_rate"],
            )
            for key, g in groups.items()
        ),
    )


# --- Markdown -------------------------------------------------------------------------------

STATUS_EMOJI: Mapping[str, str] = {"passed": "✅", "failed": "❌", "error": "⚠️"}
_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#&])")


def md_inline(text: str) -> str:
    """`text` as literal Markdown inline text: one line, every special character escaped."""
    return _INLINE_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def md_code(text: str) -> str:
    """`text` as an inline code span, whatever backticks it holds."""
    text = " ".join(str(text).splitlines())
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def md_cell(text: str) -> str:
    """Already-rendered inline Markdown made safe for a table cell (GFM needs `|` escaped)."""
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def md_fence(text: str, info: str = "") -> str:
    """A fenced code block holding `text` verbatim: the fence outruns any backticks inside."""
    ticks = "`" * max(3, max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
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
