"""An ended batch's results: its output and error files parsed into a Reply or an error per
line (custom_id), the lasting ones stored so a re-run or `glmrun batch fetch` finds them."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from glmrun import errors
from glmrun.backends import codes
from glmrun.backends.batch_api import BatchApi, BatchInfo
from glmrun.backends.store import ReplyStore, reply_to_json
from glmrun.batch.state import BatchState
from glmrun.types import ChatRequest, Reply

_ENDED: Mapping[str, type[errors.BatchEndedError]] = {
    "expired": errors.BatchExpiredError, "failed": errors.BatchFailedError,
    "cancelled": errors.BatchCancelledError,
}


def ended_error(
    batch_id: str, status: str, details: Iterable[str] = ()
) -> errors.BatchEndedError:
    """The error for a request whose batch ended `status` without answering it."""
    why = "; ".join(details)
    cls = _ENDED.get(status, errors.BatchEndedError)
    return cls(f"batch {batch_id} {status} without answering this request" + (
        f": {why}" if why else ""))


def collect(
    state: BatchState, store: ReplyStore, info: BatchInfo, api: BatchApi, *,
    requests: Mapping[str, ChatRequest] | None = None, latency_ms: float = 0.0,
    polls: int | None = None,
) -> dict[str, Reply | errors.ApiError]:
    """Download an ended batch's results into the store; the outcome per custom_id.

    Lasting answers (replies, non-retryable errors of single lines) are stored; a batch
    that failed, expired or was cancelled answers its remaining lines with that error.
    """
    entry = state.batch(info.id)
    if entry is None:
        raise errors.InputError(f"batch {info.id} is not one of this folder's batches")
    results: dict[str, Reply | errors.ApiError] = {}
    try:
        for file_id in (info.output_file_id, info.error_file_id):
            if file_id:
                results.update(_parse_results(
                    api.download_file(file_id), api, info, latency_ms, polls))
    except errors.ApiError as exc:
        return {custom_id: exc for custom_id in entry["lines"]}
    inputs: dict[str, ChatRequest] | None = None
    out: dict[str, Reply | errors.ApiError] = {}
    for custom_id, (key, occurrence) in entry["lines"].items():
        outcome = results.get(custom_id)
        if outcome is None:
            outcome = (
                ended_error(info.id, info.status, info.errors)
                if info.status != "completed"
                else errors.BatchEndedError(f"batch {info.id} has no result for {custom_id}")
            )
        elif isinstance(outcome, Reply) or not (outcome.retryable or outcome.fatal):
            request = (requests or {}).get(custom_id)
            if request is None:
                inputs = inputs if inputs is not None else saved_requests(state, entry)
                request = inputs.get(custom_id)
            if request is not None:
                stored = reply_to_json(outcome) if isinstance(outcome, Reply) else {
                    "error": outcome.to_dict()}
                store.put(key, int(occurrence), request, stored)
        out[custom_id] = outcome
    state.update(info, collected=True)
    if info.status == "completed" and entry.get("input"):
        (state.out_dir / entry["input"]).unlink(missing_ok=True)
    return out

def saved_requests(state: BatchState, entry: Mapping[str, Any]) -> dict[str, ChatRequest]:
    """The requests of a batch submitted by an earlier process, from its saved input file."""
    path = state.out_dir / str(entry.get("input") or "")
    found: dict[str, ChatRequest] = {}
    if not entry.get("input") or not path.is_file():
        return found
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                line = json.loads(raw)
                body = dict(line["body"])
                model = body.pop("model")
                messages = tuple(body.pop("messages"))
                found[line["custom_id"]] = ChatRequest(model, messages, body, "sync")
    return found


def _parse_results(
    content: bytes, api: BatchApi, info: BatchInfo, latency_ms: float, polls: int | None
) -> dict[str, Reply | errors.ApiError]:
    """Output- or error-file lines → the outcome per custom_id."""
    out: dict[str, Reply | errors.ApiError] = {}
    for raw in content.decode("utf-8", errors="replace").splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(line, Mapping) or not isinstance(line.get("custom_id"), str):
            continue
        out[line["custom_id"]] = _line_outcome(line, api, info, latency_ms, polls)
    return out


def _line_outcome(
    line: Mapping[str, Any], api: BatchApi, info: BatchInfo, latency_ms: float, polls: int | None
) -> Reply | errors.ApiError:
    custom_id = str(line["custom_id"])
    response = line.get("response")
    response = response if isinstance(response, Mapping) else {}
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, Mapping):
        try:
            reply = api.reply_from_body(body, latency_ms=latency_ms)
        except errors.ApiError as exc:
            return exc.where(note=f" [batch {info.id}, {custom_id}]")
        return dataclasses.replace(
            reply, id=custom_id, task_id=info.id,
            request_id=reply.request_id or response.get("request_id"),
            polls=polls, queue_ms=round(latency_ms, 3),
        )
    err: Any = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(err, Mapping):
        err = line.get("error")
        err = err if isinstance(err, Mapping) else {}
    code = str(err["code"]) if err.get("code") is not None else None
    message = str(err.get("message") or f"HTTP {status}")
    return codes.classify(
        status if isinstance(status, int) else None, code,
        f"{message} [batch {info.id}, {custom_id}]",
    )
