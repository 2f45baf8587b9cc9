"""Batch jobs of the emulator: validate a JSONL input file, answer its lines, walk the states.

A batch is answered in full when it is created (deterministic, so no worker thread); each
`retrieve` then reveals one more step: validating -> in_progress (`steps` retrieves, the
request counts growing) -> completed | expired | failed, or cancelling -> cancelled.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .behaviour import build_reply
from .errors import JsonObject, WireError, error_body, invalid, status_fault
from .markers import BATCH_FAULTS, FaultLedger
from .requests import parse_chat_request
from .wire import completion_json

Ending = Literal["completed", "expired", "failed"]
TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})


@dataclass(frozen=True)
class LineResult:
    """One answered input line: an output-file line when `ok`, else an error-file line."""

    ok: bool
    line: JsonObject


@dataclass(frozen=True)
class BatchPlan:
    """Everything a batch will report, decided when it is created."""

    errors: tuple[JsonObject, ...] = ()  # validation errors: the batch fails
    results: tuple[LineResult, ...] = ()
    ending: Ending = "completed"
    ending_line: int | None = None  # the line whose marker chose an expired/failed ending

    @property
    def total(self) -> int:
        return len(self.results)


def _validation_error(code: str, message: str, line: int) -> JsonObject:
    return {"code": code, "message": message, "line": line}


def plan_batch(
    content: bytes, *, ledger: FaultLedger, new_id: Callable[[str], str], now: int,
    echo: str = "",
) -> BatchPlan:
    """Validate every line (bad JSON, custom_id missing or repeated, a second model, a line that
    is not a chat completion request) and answer the valid ones like the sync endpoint
    (`echo`, MockConfig.echo_key's text, ends every reply and error message)."""
    errors: list[JsonObject] = []
    lines: list[tuple[int, str, Mapping[str, Any]]] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(content.decode("utf-8", errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError as exc:
            errors.append(_validation_error("invalid_json", f"line is not JSON: {exc}", number))
            continue
        if not isinstance(item, Mapping):
            errors.append(_validation_error("invalid_json", "line is not a JSON object", number))
            continue
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(_validation_error("missing_custom_id", "custom_id is required", number))
            continue
        if custom_id in seen:
            errors.append(
                _validation_error("duplicate_custom_id", f"custom_id {custom_id!r} repeats", number)
            )
            continue
        seen.add(custom_id)
        body = item.get("body")
        url = item.get("url")
        if (
            not isinstance(body, Mapping)
            or item.get("method", "POST") != "POST"
            or not (isinstance(url, str) and url.endswith("/chat/completions"))
        ):
            errors.append(
                _validation_error(
                    "invalid_request",
                    "a line needs method POST, url /v4/chat/completions and a JSON body",
                    number,
                )
            )
            continue
        line_model = body.get("model")
        if isinstance(line_model, str):
            if model is None:
                model = line_model
            elif line_model != model:
                errors.append(
                    _validation_error(
                        "mixed_models", f"model {line_model!r} differs from {model!r}", number
                    )
                )
                continue
        lines.append((number, custom_id, body))
    if errors:
        return BatchPlan(errors=tuple(errors))
    if not lines:
        return BatchPlan(errors=(_validation_error("empty_file", "no request lines", 0),))
    results: list[LineResult] = []
    ending: Ending = "completed"
    ending_line: int | None = None
    for number, custom_id, body in lines:
        results.append(_answer_line(custom_id, body, ledger=ledger, new_id=new_id, now=now,
                                    echo=echo))
        if ending_line is None:
            found = _batch_outcome(body)
            if found is not None:
                ending, ending_line = found, number
    return BatchPlan(results=tuple(results), ending=ending, ending_line=ending_line)


def _batch_outcome(body: Mapping[str, Any]) -> Ending | None:
    try:
        request = parse_chat_request(body)
    except WireError:
        return None
    for marker in request.directives.faults:
        if marker.name in BATCH_FAULTS:
            return "expired" if marker.name == "batch_expire" else "failed"
    return None


def _answer_line(
    custom_id: str,
    body: Mapping[str, Any],
    *,
    ledger: FaultLedger,
    new_id: Callable[[str], str],
    now: int,
    echo: str = "",
) -> LineResult:
    line_id = new_id("batch_req")
    given = body.get("request_id")
    request_id = given if isinstance(given, str) and given else line_id
    try:
        request = parse_chat_request(body)
        fault = ledger.pick(request.directives, request.conversation_key, "batch")
        error = status_fault(fault) if fault else None
        if error is not None:
            raise error
    except WireError as exc:
        response: JsonObject = {
            "status_code": exc.status,
            "request_id": request_id,
            "body": error_body(exc.code, exc.message + echo),
        }
        return LineResult(False, {"id": line_id, "custom_id": custom_id, "response": response})
    reply = build_reply(request, fault=fault)
    if echo:
        reply = dataclasses.replace(reply, content=(reply.content or "") + echo)
    completion = completion_json(
        reply, completion_id=line_id, request_id=request_id, created=now, model=request.model
    )
    response = {"status_code": 200, "request_id": request_id, "body": completion}
    return LineResult(True, {"id": line_id, "custom_id": custom_id, "response": response})


def jsonl(lines: list[JsonObject]) -> bytes:
    return "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()


StoreFile = Callable[[str, bytes, str], str]  # (filename, content, purpose) -> file id


@dataclass
class BatchRecord:
    """One batch job and the state it shows to `retrieve`."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: object
    auto_delete_input_file: bool
    created_at: int
    plan: BatchPlan
    steps: int
    status: str = "validating"
    step: int = 0
    stamps: dict[str, int] = field(default_factory=dict)  # in_progress_at, completed_at, ...
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: tuple[int, int, int] = (0, 0, 0)  # total, completed, failed

    def _counts_after(self, processed: int) -> tuple[int, int, int]:
        done = self.plan.results[:processed]
        ok = sum(1 for r in done if r.ok)
        return self.plan.total, ok, len(done) - ok

    def advance(self, now: int, store_file: StoreFile, delete_file: Callable[[str], None]) -> None:
        """One retrieve's worth of progress."""
        if self.status == "cancelling":
            self.status = "cancelled"
            self.stamps["cancelled_at"] = now
        elif self.status == "validating" and self.plan.errors:
            self.status = "failed"
            self.stamps["failed_at"] = now
        elif self.status in ("validating", "in_progress"):
            if self.status == "validating":
                self.status = "in_progress"
                self.stamps["in_progress_at"] = now
            self.step += 1
            if self.step <= self.steps:
                self.counts = self._counts_after(self.plan.total * self.step // (self.steps + 1))
            else:
                self._finish(now, store_file, delete_file)

    def _finish(self, now: int, store_file: StoreFile, delete_file: Callable[[str], None]) -> None:
        ending = self.plan.ending
        self.status = ending
        if ending == "expired":
            self.stamps["expired_at"] = now
            return
        if ending == "failed":
            self.stamps["failed_at"] = now
            return
        self.stamps["finalizing_at"] = now
        self.stamps["completed_at"] = now
        self.counts = self._counts_after(self.plan.total)
        good = [r.line for r in self.plan.results if r.ok]
        bad = [r.line for r in self.plan.results if not r.ok]
        if good:
            self.output_file_id = store_file(f"{self.id}_output.jsonl", jsonl(good), "batch")
        if bad:
            self.error_file_id = store_file(f"{self.id}_error.jsonl", jsonl(bad), "batch")
        if self.auto_delete_input_file:
            delete_file(self.input_file_id)

    def cancel(self, now: int) -> None:
        if self.status in TERMINAL or self.status == "cancelling":
            raise invalid(f"batch {self.id} is {self.status}, not cancellable")
        self.status = "cancelling"
        self.stamps["cancelling_at"] = now

    def errors_json(self) -> JsonObject | None:
        if self.status != "failed":
            return None
        if self.plan.errors:
            data = list(self.plan.errors)
        else:
            data = [
                _validation_error(
                    "500", "mock: batch failed ([[fault:batch_fail]])", self.plan.ending_line or 0
                )
            ]
        return {"object": "list", "data": data}

    def to_json(self) -> JsonObject:
        """The SDK's `Batch` (types/batch.py), every field present."""
        total, completed, failed = self.counts
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": self.errors_json(),
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.stamps.get("in_progress_at"),
            "expires_at": self.created_at + 24 * 3600,
            "finalizing_at": self.stamps.get("finalizing_at"),
            "completed_at": self.stamps.get("completed_at"),
            "failed_at": self.stamps.get("failed_at"),
            "expired_at": self.stamps.get("expired_at"),
            "cancelling_at": self.stamps.get("cancelling_at"),
            "cancelled_at": self.stamps.get("cancelled_at"),
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "metadata": self.metadata,
        }
