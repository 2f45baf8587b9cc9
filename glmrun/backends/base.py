"""The backend contract: `complete(request, identity=...) -> Reply`, plus async-task
submit/poll.

Everything above this seam speaks glmrun's types (`glmrun.types`) and raises glmrun's errors
(`glmrun.errors`). `zhipu.ZhipuBackend` wraps the real SDK; tests use `ScriptedBackend`.
Every request arrives with its `RequestIdentity`: which run sent it and which of its calls it
is, so a backend that answers many runs at once (batch mode) needs no side channel to know.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from glmrun.types import ChatRequest, Delta, Reply

DeltaSink = Callable[[Delta], None]


@dataclass(frozen=True)
class RequestIdentity:
    """Which run a request belongs to, and which of its calls it is.

    `run_id` is the run's id (`RunPlan.id`, the transcript's name). `call` numbers the run's
    requests from 0 in the order the conversation makes them (turns, tool rounds, judge
    calls); a retry is the same call again, and so is a request --resume answers from what an
    earlier run kept. The identity travels beside the request, not in it: the body sent and
    the record/replay key are the same whichever run asks.
    """

    run_id: str
    call: int


@dataclass(frozen=True)
class TaskTicket:
    """An async task the server accepted."""

    task_id: str
    request_id: str | None


@runtime_checkable
class Backend(Protocol):
    """What the runner needs from a model provider."""

    def complete(
        self, request: ChatRequest, on_delta: DeltaSink | None = None, *,
        identity: RequestIdentity,
    ) -> Reply:
        """Run a sync or stream request to its end. Streams call on_delta per content piece."""
        ...

    def submit(self, request: ChatRequest, *, identity: RequestIdentity) -> TaskTicket:
        """Start an async task (chat.asyncCompletions.create); its polls need no identity,
        the ticket names the task."""
        ...

    def poll(self, ticket: TaskTicket) -> Reply | None:
        """One look at an async task: its Reply when SUCCESS, None while PROCESSING.

        Raises TaskFailedError when the task FAILed.
        """
        ...

    def close(self) -> None: ...
