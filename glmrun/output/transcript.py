"""Transcripts: the JSON form of one conversation run, and reading it back.

The form is documented by `schemas/transcript.schema.json` (tests validate every transcript they
write against it); the runner builds it as plain dicts. Writing lives in `output.writer` (the
JSON encoded as every glmrun file is, `safety.atomic.encode_json`), the Markdown view in
`output.markdown`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

Status = Literal["passed", "failed", "error"]

STATUSES: tuple[Status, ...] = ("passed", "failed", "error")
TRANSCRIPT_SCHEMA_PATH: Traversable = files("glmrun") / "schemas" / "transcript.schema.json"

def load_transcript_schema() -> dict[str, Any]:
    """The transcript JSON Schema, read from the installed package (editable or wheel)."""
    return cast(dict[str, Any], json.loads(TRANSCRIPT_SCHEMA_PATH.read_text(encoding="utf-8")))


def read_transcript(path: Path) -> dict[str, Any]:
    """Load one JSON transcript (not validated against the schema; see validate_transcript)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a transcript (a JSON {type(data).__name__})")
    return data


def _is_transcript(data: Mapping[str, Any]) -> bool:
    return "transcript_version" in data and data.get("status") in STATUSES


def read_complete(path: Path) -> dict[str, Any] | None:
    """The transcript in `path` if it is whole and has a final status, else None."""
    try:
        data = read_transcript(path)
    except (OSError, ValueError):  # missing, unreadable, truncated, not UTF-8
        return None
    return data if _is_transcript(data) else None


def is_complete(path: Path) -> bool:
    """True when `path` holds a whole transcript with a final status (what --resume trusts)."""
    return read_complete(path) is not None


def iter_transcripts(out_dir: Path) -> Iterator[dict[str, Any]]:
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
