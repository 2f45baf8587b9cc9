"""What a conversation cut off by Ctrl-C leaves for `--resume`: the calls already answered and
the async task it was waiting for, so that `--resume` sends neither again.

One file per conversation, `<out>/.glmrun-resume/<id>.json`, written by the runner once its
workers have stopped and deleted once that conversation's transcript is written. A resumed
conversation replays its answered calls in order while each request is the one saved (same
canonical hash, so a file edited since then is simply sent afresh from where it differs),
then polls the saved task instead of submitting its request again.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmrun.backends.base import TaskTicket
from glmrun.backends.store import reply_from_json, reply_to_json, request_key
from glmrun.safety.atomic import write_json_atomically
from glmrun.types import ChatRequest, Reply

FOLDER = ".glmrun-resume"
VERSION = 1


@dataclass(frozen=True)
class Answered:
    """A call answered before the stop: its reply and the transcript's record of it (None for
    a judge's call, which has no record of its own)."""

    key: str
    reply: Reply
    record: Mapping[str, Any] | None


@dataclass(frozen=True)
class SavedState:
    answered: tuple[Answered, ...]
    pending: tuple[str, TaskTicket] | None  # (request key, the task submitted for it)

    def to_json(self, plan_id: str) -> dict[str, Any]:
        return {
            "version": VERSION, "id": plan_id,
            "answered": [{"key": a.key, "reply": reply_to_json(a.reply), "record": a.record}
                         for a in self.answered],
            "pending": None if self.pending is None else {
                "key": self.pending[0], "task_id": self.pending[1].task_id,
                "request_id": self.pending[1].request_id,
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SavedState:
        pending = data.get("pending")
        return cls(
            answered=tuple(Answered(a["key"], reply_from_json(a["reply"]), a.get("record"))
                           for a in data.get("answered") or ()),
            pending=None if not pending else (
                pending["key"],
                TaskTicket(pending["task_id"], pending.get("request_id"))),
        )


class CallLog:
    """One conversation's calls: what an earlier run left (to reuse) and what this run has
    answered so far (to save if it is cut off). Used by its worker thread alone."""

    def __init__(self, saved: SavedState | None = None) -> None:
        self._saved = list(saved.answered) if saved else []
        self._saved_pending = saved.pending if saved else None
        self._next = 0
        self._answered: list[tuple[ChatRequest | str, Reply, Mapping[str, Any] | None]] = []
        self._pending: tuple[ChatRequest, TaskTicket] | None = None
        self.reused = 0  # calls answered from the saved state

    def reuse(self, request: ChatRequest) -> Answered | None:
        """The saved answer to this request, if the earlier run got that far with it."""
        if self._next >= len(self._saved):
            return None
        key = request_key(request)
        entry = self._saved[self._next]
        if entry.key != key:  # the conversation went another way: send from here on
            del self._saved[self._next:]
            self._saved_pending = None
            return None
        self._next += 1
        self.reused += 1
        self._answered.append((key, entry.reply, entry.record))
        return entry

    def saved_ticket(self, request: ChatRequest) -> TaskTicket | None:
        """The task an earlier run submitted for this request and never collected."""
        if self._saved_pending is None or self._next < len(self._saved):
            return None
        key, ticket = self._saved_pending
        self._saved_pending = None
        return ticket if key == request_key(request) else None

    def submitted(self, request: ChatRequest, ticket: TaskTicket) -> None:
        self._pending = (request, ticket)

    def answered(
        self, request: ChatRequest, reply: Reply, record: Mapping[str, Any] | None
    ) -> None:
        self._answered.append((request, reply, record))
        self._pending = None

    def state(self) -> SavedState | None:
        """What to save, or None when nothing was answered or submitted."""
        if not self._answered and self._pending is None:
            return None
        return SavedState(
            answered=tuple(
                Answered(r if isinstance(r, str) else request_key(r), reply, record)
                for r, reply, record in self._answered),
            pending=None if self._pending is None else (
                request_key(self._pending[0]), self._pending[1]),
        )


def state_path(out_dir: Path, plan_id: str) -> str:
    return os.path.join(os.fspath(out_dir), FOLDER, f"{plan_id}.json")


def load(out_dir: Path, plan_id: str) -> SavedState | None:
    """The state a cut-off run saved for this conversation; None if none (or unreadable)."""
    try:
        with open(state_path(out_dir, plan_id), encoding="utf-8") as fh:
            data = json.load(fh)
        if data.get("version") != VERSION or data.get("id") != plan_id:
            return None
        return SavedState.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(out_dir: Path, plan_id: str, state: SavedState) -> None:
    write_json_atomically(Path(state_path(out_dir, plan_id)), state.to_json(plan_id))


def discard(out_dir: Path, plan_ids: list[str]) -> None:
    """Delete the saved states of these conversations (their transcripts are written), and the
    folder once it is empty."""
    for plan_id in plan_ids:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_path(out_dir, plan_id))
    with contextlib.suppress(OSError):  # not empty (others still cut off), or never made
        os.rmdir(os.path.join(os.fspath(out_dir), FOLDER))
