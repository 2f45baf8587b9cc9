"""What a run is given: its options (RunOptions; its PollPolicy is in run/limits.py) and the
Reporter it tells what happens (see glmrun.output.progress).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from glmrun import errors
from glmrun.models import PriceTable
from glmrun.output.summary import RunRow, RunSummary
from glmrun.run.limits import PollPolicy, RetryPolicy
from glmrun.types import Delta


@dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    formats: tuple[str, ...] = ("json", "md")
    concurrency: int = 4
    # False: the gate keeps its width whatever the answers (batch mode, where every
    # conversation holds its request slot while it waits for a round)
    adaptive: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll: PollPolicy = field(default_factory=PollPolicy)
    rpm: int | None = None
    tpm: int | None = None
    deadline_s: float | None = None  # per conversation
    resume: bool = False
    grace_s: float = 10.0  # after an interrupt, how long calls in flight may finish
    async_fanout: int = 256  # async tasks waiting at once (they hold no request slot)
    base_url: str | None = None
    secrets: tuple[str, ...] = ()
    seed: int | None = None  # for retry jitter, so tests are repeatable
    prices: PriceTable = field(default_factory=PriceTable)  # costs: glmrun.models + --prices
    manifest: bool = True  # write OUT/run.json at the end (glmrun.output.manifest)
    command: tuple[str, ...] | None = None  # the command line, for run.json
    run_settings: Mapping[str, Any] = field(default_factory=dict)  # more settings for run.json
    earlier_manifest: Mapping[str, Any] | None = None  # --last-failed: keep the runs not redone


class Reporter(Protocol):
    """What the runner tells the display; see `glmrun.output.progress`."""

    def started(self, total: int, skipped: int) -> None: ...
    def conversation_started(self, plan_id: str) -> None: ...
    def delta(self, plan_id: str, delta: Delta, *, turn: int, round_: int) -> None: ...
    def retrying(self, plan_id: str, error: errors.ApiError, wait_s: float) -> None: ...
    def conversation_finished(self, row: RunRow, transcript: Mapping[str, Any]) -> None: ...
    def status(self, in_flight: int, concurrency: int) -> None: ...
    def finished(self, summary: RunSummary) -> None: ...


class NullReporter:
    def started(self, total: int, skipped: int) -> None: pass
    def conversation_started(self, plan_id: str) -> None: pass
    def delta(self, plan_id: str, delta: Delta, *, turn: int, round_: int) -> None: pass
    def retrying(self, plan_id: str, error: errors.ApiError, wait_s: float) -> None: pass
    def conversation_finished(self, row: RunRow, transcript: Mapping[str, Any]) -> None: pass
    def status(self, in_flight: int, concurrency: int) -> None: pass
    def finished(self, summary: RunSummary) -> None: pass
