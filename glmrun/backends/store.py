"""A folder of recorded replies keyed by a canonical hash of the request.

Used by --record / --replay / --cache and by batch mode (a fetched batch's answers land here,
so a re-run picks them up). One JSON file per (request, occurrence): the n-th identical
request of a run (repeats) gets the n-th recording. The API key is never part of a request;
a secret inside one (or echoed in a reply) is stored as *** (the hash is of the real request).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glmrun.safety.atomic import write_json_atomically
from glmrun.safety.redaction import Redactor, env_keys
from glmrun.types import ChatRequest, Reply, ToolCall, Usage

STORE_VERSION = 1


def request_key(request: ChatRequest) -> str:
    """sha256 of the request's canonical JSON (sorted keys, no whitespace; mode included)."""
    body = request.body()
    body.pop("stream", None)
    canonical = json.dumps(
        {"v": STORE_VERSION, "mode": request.mode, "body": body},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def reply_to_json(reply: Reply, deltas: list[dict[str, str]] | None = None) -> dict[str, Any]:
    data = dataclasses.asdict(reply)
    data["tool_calls"] = [dataclasses.asdict(tc) for tc in reply.tool_calls]
    if deltas is not None:
        data["deltas"] = deltas
    return data


def reply_from_json(data: Mapping[str, Any]) -> Reply:
    fields = {f.name for f in dataclasses.fields(Reply)}
    values = {k: v for k, v in data.items() if k in fields}
    values["tool_calls"] = tuple(ToolCall(**tc) for tc in data.get("tool_calls") or ())
    values["usage"] = Usage(**data["usage"]) if data.get("usage") else None
    for name in ("chunk_offsets_ms", "web_search", "content_filter"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return Reply(**values)


class ReplyStore:
    """Recorded replies on disk: <dir>/<key[:2]>/<key>-<occurrence>.json, written atomically."""

    def __init__(self, root: Path, redactor: Redactor | None = None) -> None:
        self.root = root
        self.redactor = redactor if redactor is not None else Redactor(env_keys())
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}

    def path(self, key: str, occurrence: int) -> Path:
        return self.root / key[:2] / f"{key}-{occurrence}.json"

    def next_occurrence(self, key: str) -> int:
        """How many times this run has asked for `key` before (0 for the first time)."""
        with self._lock:
            n = self._seen.get(key, 0)
            self._seen[key] = n + 1
            return n

    def get(self, key: str, occurrence: int = 0) -> dict[str, Any] | None:
        """The stored entry for the occurrence, falling back to the first recording."""
        for n in dict.fromkeys((occurrence, 0)):
            path = self.path(key, n)
            if path.is_file():
                with path.open(encoding="utf-8") as fh:
                    data: dict[str, Any] = json.load(fh)
                return data
        return None

    def put(
        self, key: str, occurrence: int, request: ChatRequest, reply: Mapping[str, Any]
    ) -> Path:
        path = self.path(key, occurrence)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "store_version": STORE_VERSION,
            "key": key,
            "occurrence": occurrence,
            "request": {"mode": request.mode, "body": request.body()},
            "reply": dict(reply),
        }
        write_json_atomically(path, entry, redactor=self.redactor)
        return path
