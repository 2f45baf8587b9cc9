"""How batch mode runs (polling, Zhipu's file limits, waiting or not) and what it tells the
user while it does (`BatchEvent`, one line each)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from glmrun.backends.batch_api import BatchInfo
from glmrun.run.limits import Clock, PollPolicy, Sleep

# How a running batch is watched: no timeout of glmrun's own (Zhipu's window is 24 h).
BATCH_POLL = PollPolicy(start_s=5.0, factor=1.5, ceiling_s=60.0, timeout_s=None)


@dataclass(frozen=True)
class BatchLimits:
    """Zhipu's limits per input file, and how many conversations run at once (one thread each)."""

    max_lines: int = 50_000
    max_bytes: int = 100 * 1000 * 1000
    wave: int = 2_000


@dataclass(frozen=True)
class BatchEvent:
    """Something the user may want to see: a batch submitted, progressing, ended, or left
    running on Zhipu's side (--no-wait, or the run was stopped)."""

    kind: str  # submitted | progress | ended | left
    batch: BatchInfo
    model: str
    requests: int


@dataclass(frozen=True)
class BatchOptions:
    """How batch mode runs; `selection` is saved so `glmrun batch fetch` can resume the run."""

    selection: Mapping[str, Any] | None = None  # api.Selection.saved()
    poll: PollPolicy = BATCH_POLL
    limits: BatchLimits = field(default_factory=BatchLimits)
    wait: bool = True  # False (--no-wait): submit, save the state and leave the batches running
    quiet_s: float = 2.0  # flush pending requests after this long without news from any thread
    report_failed: frozenset[str] = frozenset()  # ended batches whose failure is the answer
    on_event: Callable[[BatchEvent], None] | None = None
    sleep: Sleep | None = None  # default: waits that a stop (Ctrl-C) cuts short
    clock: Clock = time.monotonic


def counts_text(info: BatchInfo) -> str:
    return f"{info.completed}/{info.total} done" + (f", {info.failed} failed" if info.failed
                                                     else "")


def describe(event: BatchEvent) -> str:
    """One line for the user about a batch event."""
    b = event.batch
    if event.kind == "submitted":
        return f"batch {b.id}: submitted {event.requests} requests ({event.model})"
    if event.kind == "left":
        return f"batch {b.id}: left running on the server ({event.requests} requests)"
    return f"batch {b.id}: {b.status} ({counts_text(b)})"
