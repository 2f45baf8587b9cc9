"""JUnit XML from transcripts: one <testsuite> per conversation file, one <testcase> per run.

The output keeps to the subset of Jenkins' junit-10.xsd that CI servers agree on. Transcripts are
consumed one at a time: each <testcase> is rendered at once into a spool file, and only
per-suite counters and spool offsets stay in memory until the report is assembled.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from glmrun.output.transcript import final_reply
from glmrun.safety.atomic import write_atomically

MAX_MESSAGE_CHARS = 500
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_chars(text: str) -> str:
    """`text` with characters XML 1.0 cannot hold (control characters, lone surrogates) spelled
    out as \\uXXXX, so a model's odd output cannot make the report unparsable."""
    return _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def xml_text(text: str) -> str:
    """Escape character data (\\r kept as a reference: parsers would turn it into \\n)."""
    return (_xml_chars(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


def xml_attr(text: str) -> str:
    """Escape an attribute value, quotes included; newlines and tabs survive as references."""
    return (xml_text(text).replace('"', "&quot;").replace("\n", "&#10;")
            .replace("\t", "&#9;"))


def classname_of(source_file: str) -> str:
    """convos/chat/greeting.yaml -> convos.chat.greeting (the dotted form CI tools group by)."""
    parts = [p for p in re.split(r"[/\\]", source_file) if p not in ("", ".")]
    if not parts:
        return "glmrun"
    parts[-1] = parts[-1].rsplit(".", 1)[0] or parts[-1]
    return ".".join(parts)


def _timestamp(iso: object) -> str | None:
    """An ISO 8601 time as UTC without offset or fraction (the form every JUnit reader accepts)."""
    if not isinstance(iso, str):
        return None
    try:
        # Python 3.10's fromisoformat takes neither Z nor fractions of other than 3 or 6 digits
        moment = datetime.fromisoformat(re.sub(r"\.\d+", "", iso, count=1).replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _seconds(duration_ms: object) -> float:
    return float(duration_ms) / 1000 if isinstance(duration_ms, (int, float)) else 0.0


def _failure(t: Mapping[str, Any]) -> str:
    failed = [e for e in t.get("expectations") or [] if not e.get("passed")]
    entries = []
    for e in failed:
        head = str(e.get("kind", "expectation"))
        if e.get("name"):
            head += f" {e['name']}"
        if e.get("turn") is not None:
            head += f" (turn {e['turn']})"
        entry = f"{head}: {e.get('reason', '')}"
        if e.get("diff"):
            entry += "\n" + str(e["diff"]).rstrip("\n")
        entries.append(entry)
    if len(failed) == 1:
        message = str(failed[0].get("reason", ""))
    elif failed:
        message = f"{len(failed)} expectations failed: " + "; ".join(
            str(e.get("reason", "")) for e in failed)
    else:
        message = "failed"
    body = xml_text("\n\n".join(entries))
    return f'<failure message="{xml_attr(_one_line(message))}" type="expectation">{body}</failure>'


def _error(t: Mapping[str, Any]) -> str:
    raw = t.get("error")
    error: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    kind = str(error.get("kind") or "error")
    message = str(error.get("message") or "error")
    lines = [f"kind: {kind}"]
    if error.get("code") is not None:
        lines.append(f"code: {error['code']}")
    if error.get("status") is not None:
        lines.append(f"status: {error['status']}")
    lines.append(f"message: {message}")
    body = xml_text("\n".join(lines))
    return f'<error message="{xml_attr(_one_line(message))}" type="{xml_attr(kind)}">{body}</error>'


def render_testcase(t: Mapping[str, Any]) -> str:
    """One <testcase> element (indented for its place in the report), newline-terminated."""
    source = t.get("source") or {}
    head = (f'    <testcase name="{xml_attr(str(t.get("id", "")))}" '
            f'classname="{xml_attr(classname_of(str(source.get("file", ""))))}" '
            f'time="{_seconds(t.get("duration_ms")):.3f}"')
    body = []
    if t.get("status") == "failed":
        body.append(_failure(t))
    elif t.get("status") == "error":
        body.append(_error(t))
    reply = final_reply(t)
    if reply is not None:
        body.append(f"<system-out>{xml_text(reply)}</system-out>")
    if not body:
        return head + "/>\n"
    return head + ">\n" + "".join(f"      {b}\n" for b in body) + "    </testcase>\n"


@dataclass
class _Suite:
    """What is kept of a conversation file's runs until the report is written."""

    name: str
    tests: int = 0
    failures: int = 0
    errors: int = 0
    seconds: float = 0.0
    timestamp: str | None = None  # of the earliest run
    spans: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) in the spool


def _document(suites: Iterable[_Suite], spool: IO[bytes], suite_name: str) -> Iterator[bytes]:
    suites = list(suites)
    tests = sum(s.tests for s in suites)
    failures = sum(s.failures for s in suites)
    errors = sum(s.errors for s in suites)
    seconds = sum(s.seconds for s in suites)
    yield (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<testsuites name="{xml_attr(suite_name)}" tests="{tests}" failures="{failures}" '
        f'errors="{errors}" time="{seconds:.3f}">\n'
    ).encode()
    for s in suites:
        stamp = f' timestamp="{s.timestamp}"' if s.timestamp else ""
        yield (
            f'  <testsuite name="{xml_attr(s.name)}" tests="{s.tests}" failures="{s.failures}" '
            f'errors="{s.errors}" skipped="0" time="{s.seconds:.3f}"{stamp}>\n'
        ).encode()
        for offset, length in s.spans:
            spool.seek(offset)
            yield spool.read(length)
        yield b"  </testsuite>\n"
    yield b"</testsuites>\n"


def write_junit(
    transcripts: Iterable[Mapping[str, Any]], path: Path, suite_name: str = "glmrun"
) -> None:
    """Write a JUnit XML report of `transcripts` to `path`, atomically.

    failed -> <failure type="expectation"> with each failed expectation's reason and diff;
    error -> <error type="<error kind>">; the final reply goes to <system-out>.
    """
    path = Path(path)
    suites: dict[str, _Suite] = {}
    with tempfile.TemporaryFile() as spool:
        for t in transcripts:
            file = str((t.get("source") or {}).get("file") or "(unknown)")
            suite = suites.setdefault(file, _Suite(file))
            fragment = render_testcase(t).encode("utf-8")
            suite.spans.append((spool.tell(), len(fragment)))
            spool.write(fragment)
            suite.tests += 1
            suite.failures += t.get("status") == "failed"
            suite.errors += t.get("status") == "error"
            suite.seconds += _seconds(t.get("duration_ms"))
            stamp = _timestamp(t.get("started_at"))
            if stamp and (suite.timestamp is None or stamp < suite.timestamp):
                suite.timestamp = stamp
        spool.flush()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, _document(suites.values(), spool, suite_name))
