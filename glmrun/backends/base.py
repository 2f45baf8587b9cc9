"""The backend contract: `complete(request) -> Reply`, plus async-task submit/poll.

Everything above this seam speaks glmrun's types (`glmrun.types`) and raises glmrun's errors
(`glmrun.errors`). `zhipu.ZhipuBackend` wraps the real SDK; tests use `ScriptedBackend`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from glmrun.types import ChatRequest, Delta, Reply

DeltaSink = Callable[[Delta], None]


@dataclass(frozen=True)
class TaskTicket:
    """An async task the server accepted."""

    task_id: str
    request_id: str | None
    submitted_at: float  # time.monotonic() when the submit returned


class Backend(Protocol):
    """What the runner needs from a model provider."""

    def complete(self, request: ChatRequest, on_delta: DeltaSink | None = None) -> Reply:
        """Run a sync or stream request to its end. Streams call on_delta per content piece."""
        ...

    def submit(self, request: ChatRequest) -> TaskTicket:
        """Start an async task (chat.asyncCompletions.create)."""
        ...

    def poll(self, ticket: TaskTicket) -> Reply | None:
        """One look at an async task: its Reply when SUCCESS, None while PROCESSING.

        Raises TaskFailedError when the task FAILed.
        """
        ...

    def close(self) -> None: ...
