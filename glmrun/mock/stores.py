"""The emulator's stored things: uploaded files, async tasks and batch jobs, with their routes'
answers (`/files`, `/async-result/{id}`, `/batches`) as JSON, or WireErrors.

Each store is guarded by the emulator's lock (the handler holds it around every call).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .batches import BatchRecord, plan_batch
from .errors import JsonObject, WireError, invalid
from .markers import FaultLedger
from .multipart import parse_form

Query = dict[str, list[str]]


def page(ids: list[str], query: Query) -> tuple[list[str], bool]:
    """Cursor pagination: the ids after `after`, at most `limit` (default 20)."""
    after = query.get("after", [None])[0]
    if after in ids:
        ids = ids[ids.index(after) + 1 :]
    try:
        limit = max(1, min(100, int(query.get("limit", ["20"])[0])))
    except ValueError:
        limit = 20
    return ids[:limit], len(ids) > limit


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


class FileStore:
    """`POST /files` (multipart), `GET /files`, `GET|DELETE /files/{id}`, `.../content`."""

    def __init__(self, new_id: Callable[[str], str]) -> None:
        self._new_id = new_id
        self._files: dict[str, StoredFile] = {}

    def all(self) -> list[StoredFile]:
        return list(self._files.values())

    def get(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def store(self, filename: str, data: bytes, purpose: str) -> str:
        file = StoredFile(self._new_id("file"), filename, purpose, data, int(time.time()))
        self._files[file.id] = file
        return file.id

    def delete(self, file_id: str) -> None:
        self._files.pop(file_id, None)

    def upload(self, raw: bytes, content_type: str) -> JsonObject:
        fields = parse_form(raw, content_type)
        upload = fields.get("file")
        purpose = fields.get("purpose")
        if upload is None or upload[0] is None:
            raise invalid("file is required")
        if purpose is None or not purpose[1]:
            raise invalid("purpose is required")
        return self._files[self.store(upload[0], upload[1], purpose[1].decode())].to_json()

    def listing(self, query: Query) -> JsonObject:
        purpose = query.get("purpose", [None])[0]
        files = [f for f in self._files.values() if purpose in (None, f.purpose)]
        if query.get("order", ["desc"])[0] != "asc":
            files.reverse()
        ids, has_more = page([f.id for f in files], query)
        return {"object": "list", "data": [self._files[i].to_json() for i in ids],
                "has_more": has_more}

    def existing(self, file_id: str) -> StoredFile:
        file = self._files.get(file_id)
        if file is None:
            raise WireError(404, "404", f"文件不存在 (no file {file_id!r})")
        return file


@dataclass
class Task:
    id: str
    request_id: str
    model: str
    polls: int | None  # PROCESSING answers still due; None: never finishes
    result: JsonObject | None  # choices + usage, or None when the task FAILs
    damage: str | None = None  # a BODY_FAULTS name spoiling the first SUCCESS answer

    def status_json(self, status: str) -> JsonObject:
        return {"id": self.id, "request_id": self.request_id, "model": self.model,
                "task_status": status}


class TaskStore:
    """Async chat tasks: created by `POST /async/chat/completions`, polled by
    `GET /async-result/{id}`."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def add(self, task: Task) -> None:
        self._tasks[task.id] = task

    def poll(self, task_id: str) -> tuple[JsonObject, str | None]:
        """The task's answer now, and the body fault that spoils it (once)."""
        task = self._tasks.get(task_id)
        if task is None:
            raise WireError(404, "404", f"任务不存在 (no async task {task_id!r})")
        if task.polls is None or task.polls > 0:
            if task.polls is not None:
                task.polls -= 1
            return task.status_json("PROCESSING"), None
        if task.result is None:
            return task.status_json("FAIL"), None
        damage, task.damage = task.damage, None
        return {**task.status_json("SUCCESS"), **task.result}, damage


class BatchStore:
    """`POST /batches`, `GET /batches[/{id}]`, `POST /batches/{id}/cancel`."""

    def __init__(self) -> None:
        self._batches: dict[str, BatchRecord] = {}

    @staticmethod
    def plan(body: Any, file: StoredFile | None, *, ledger: FaultLedger,
             new_id: Callable[[str], str], steps: int, echo: str) -> BatchRecord:
        """A new batch answering `file` (looked up by the caller): every line is answered now,
        without the lock, so a large batch does not hold up other requests."""
        if not isinstance(body, Mapping):
            raise invalid("JSON body expected")
        endpoint = body.get("endpoint")
        if file is None:
            raise invalid(f"input_file_id {body.get('input_file_id')!r} 不存在")
        if not isinstance(endpoint, str) or not endpoint.endswith("/chat/completions"):
            raise invalid(f"mock: only chat completion batches are supported, not {endpoint!r}")
        now = int(time.time())
        return BatchRecord(
            id=new_id("batch"),
            input_file_id=file.id,
            endpoint=endpoint,
            completion_window=str(body.get("completion_window") or "24h"),
            metadata=body.get("metadata"),
            auto_delete_input_file=body.get("auto_delete_input_file", True) is not False,
            created_at=now,
            plan=plan_batch(file.data, ledger=ledger, new_id=new_id, now=now, echo=echo),
            steps=steps,
        )

    def add(self, record: BatchRecord) -> JsonObject:
        self._batches[record.id] = record
        return record.to_json()

    def _record(self, batch_id: str) -> BatchRecord:
        record = self._batches.get(batch_id)
        if record is None:
            raise WireError(404, "404", f"batch 不存在 (no batch {batch_id!r})")
        return record

    def retrieve(self, batch_id: str, files: FileStore) -> JsonObject:
        record = self._record(batch_id)
        record.advance(int(time.time()), files.store, files.delete)
        return record.to_json()

    def cancel(self, batch_id: str) -> JsonObject:
        record = self._record(batch_id)
        record.cancel(int(time.time()))
        return record.to_json()

    def listing(self, query: Query) -> JsonObject:
        records = list(reversed(self._batches.values()))
        ids, has_more = page([r.id for r in records], query)
        return {
            "object": "list",
            "data": [self._batches[i].to_json() for i in ids],
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
            "has_more": has_more,
        }
