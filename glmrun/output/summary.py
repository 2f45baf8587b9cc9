"""What a run tells at its end: one small row per finished conversation, tallies, the summary.

The runner fills a `RunSummary` as conversations finish; `glmrun merge` and `--last-failed`
rebuild one from transcripts (`row_from_transcript`). Output code reads it; nothing here runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from glmrun import errors


@dataclass(frozen=True, slots=True)
class RunRow:
    """The little the runner keeps about each finished conversation."""

    id: str
    name: str
    group: str  # repeats of one conversation and case share a group
    pass_rate: float
    status: str  # passed | failed | error
    tokens: int
    duration_ms: float
    error: str | None = None
    failures: tuple[str, ...] = ()
    reply_preview: str = ""
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None  # CNY; None when the model has no price
    latency_ms: float = 0.0  # the calls' latency, summed
    model: str = ""
    reply_hash: str | None = None  # of the final reply (reply_hash()), None without one


@dataclass(slots=True)
class Tally:
    """One conversation's runs in a summary: all its cases and repeats, counted."""

    runs: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    tokens: int = 0
    duration_ms: float = 0.0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None  # of the runs with a price

    def add(self, row: RunRow) -> None:
        self.runs += 1
        self.passed += row.status == "passed"
        self.failed += row.status == "failed"
        self.errors += row.status == "error"
        self.tokens += row.tokens
        self.duration_ms += row.duration_ms
        self.cached_tokens += row.cached_tokens
        self.reasoning_tokens += row.reasoning_tokens
        self.cost = add_costs(self.cost, row.cost)

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.runs + other.runs, self.passed + other.passed,
                     self.failed + other.failed, self.errors + other.errors,
                     self.tokens + other.tokens, self.duration_ms + other.duration_ms,
                     self.cached_tokens + other.cached_tokens,
                     self.reasoning_tokens + other.reasoning_tokens,
                     add_costs(self.cost, other.cost))


def add_costs(a: float | None, b: float | None) -> float | None:
    """A sum of costs where None means "no price": the sum of those that have one."""
    if a is None:
        return b
    return a if b is None else a + b


class RunKey(Protocol):
    """What a summary needs to know of a run besides its row (a RunPlan; `glmrun merge` has
    only transcripts)."""

    @property
    def id(self) -> str: ...
    @property
    def conversation(self) -> str: ...


@dataclass
class RunSummary:
    """What a run leaves behind besides its transcripts: counts and the rows worth reporting.

    A conversation that passed on its own (no repeats) is kept as its id only, in
    `passed_ids`: a suite of 20,000 conversations holds 20,000 ids, not 20,000 rows. Every
    other finished conversation (failed, error, or one run of a repeat group, which pass_rate
    judges together) has its `RunRow` in `rows`.
    """

    total: int = 0  # runs planned
    conversations: int = 0  # the conversations they are runs of
    skipped: int = 0  # complete transcripts reused by --resume
    rows: list[RunRow] = field(default_factory=list)
    passed_ids: list[str] = field(default_factory=list)
    tokens: int = 0  # of every finished conversation, --resume's reused ones included
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None  # CNY, of the conversations whose model has a price
    unpriced: int = 0  # conversations whose model has no price
    tallies: dict[str, Tally] = field(default_factory=dict)  # by conversation (plan stem)
    wall_s: float = 0.0
    interrupted: bool = False
    not_started: int = 0
    fatal: errors.ApiError | errors.OutputError | None = None  # what stopped the whole run
    peak_in_flight: int = 0
    # tokens, latency_ms, model, reply hash and cost of each run in passed_ids, for run.json
    # (a tuple, not a row)
    measures: dict[str, tuple[int, float, str, str | None, float | None]] = field(
        default_factory=dict)
    models: dict[str, Tally] = field(default_factory=dict)  # by model, for a model matrix

    def add(self, row: RunRow, plan: RunKey) -> None:
        """Count one finished run of `plan` (its id is kept as the plan's own string)."""
        self.tokens += row.tokens
        self.cached_tokens += row.cached_tokens
        self.reasoning_tokens += row.reasoning_tokens
        self.cost = add_costs(self.cost, row.cost)
        self.unpriced += row.cost is None
        tally = self.tallies.get(plan.conversation)
        if tally is None:
            tally = self.tallies[plan.conversation] = Tally()
        tally.add(row)
        by_model = self.models.get(row.model)
        if by_model is None:
            by_model = self.models[row.model] = Tally()
        by_model.add(row)
        if row.status == "passed" and row.group == row.id:
            self.passed_ids.append(plan.id)
            self.measures[plan.id] = (row.tokens, row.latency_ms, row.model, row.reply_hash,
                                      row.cost)
        else:
            if row.status == "passed" and row.reply_preview:
                # only reports of what did not pass show the reply
                row = dataclasses.replace(row, reply_preview="")
            self.rows.append(row)

    @property
    def finished(self) -> int:
        return len(self.passed_ids) + len(self.rows)

    def finished_ids(self) -> list[str]:
        """The ids of every finished conversation (reused ones included), sorted."""
        return sorted([*self.passed_ids, *(r.id for r in self.rows)])

    def statuses(self) -> dict[str, str]:
        """Each finished conversation's status, by id."""
        out = dict.fromkeys(self.passed_ids, "passed")
        out.update((r.id, r.status) for r in self.rows)
        return dict(sorted(out.items()))

    def count(self, status: str) -> int:
        alone = len(self.passed_ids) if status == "passed" else 0
        return alone + sum(1 for r in self.rows if r.status == status)

    def failed_groups(self) -> list[str]:
        """Groups (conversation × case) whose pass rate is below what they require."""
        groups: dict[str, list[RunRow]] = {}
        for row in self.rows:  # a group that passed alone is in passed_ids: never failed
            groups.setdefault(row.group, []).append(row)
        bad = []
        for name, rows in groups.items():
            passed = sum(1 for r in rows if r.status == "passed")
            if passed < rows[0].pass_rate * len(rows) - 1e-9:
                bad.append(name)
        return bad

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.fatal is not None or self.count("error") or self.not_started:
            return 3
        return 1 if self.failed_groups() else 0


def row_from_transcript(data: Mapping[str, Any], group: str) -> RunRow:
    """The summary's row of a finished run, read back from its transcript."""
    from glmrun.output.transcript import final_reply

    failures = tuple(_failure_text(e) for e in data.get("expectations", []) if not e["passed"])
    err = data.get("error")
    reply = next(
        (m.get("content") for m in reversed(data.get("messages", []))
         if m.get("role") == "assistant" and isinstance(m.get("content"), str)),
        "",
    )
    usage = data.get("usage") or {}
    cost = data.get("cost")
    return RunRow(
        id=data["id"], name=data["name"], group=group,
        latency_ms=sum(float(c.get("latency_ms") or 0) for c in data.get("calls") or []),
        model=sys.intern(str(data.get("model") or "")), reply_hash=reply_hash(final_reply(data)),
        pass_rate=float(data.get("pass_rate", 1.0)), status=data["status"],
        tokens=int(usage.get("total_tokens", 0)),
        cached_tokens=int(usage.get("cached_tokens", 0)),
        reasoning_tokens=int(usage.get("reasoning_tokens", 0)),
        cost=float(cost) if isinstance(cost, (int, float)) else None,
        duration_ms=float(data.get("duration_ms", 0.0)),
        error=(f"{err['kind']}: {err['message']}" + (f" (code {err['code']})" if err.get("code")
               else "")) if err else None,
        failures=failures, reply_preview=(reply or "")[:200],  # a preview, not the reply
    )


def reply_hash(reply: str | None) -> str | None:
    """A short fingerprint of a final reply: `diff` opens transcripts only where two differ."""
    return None if reply is None else hashlib.sha256(reply.encode("utf-8")).hexdigest()[:16]


def _failure_text(result: Mapping[str, Any], max_lines: int = 20) -> str:
    """A failed expectation's reason, with its diff (cut to a screenful) for the terminal."""
    diff = (result.get("diff") or "").splitlines()
    if len(diff) > max_lines:
        diff = [*diff[:max_lines], f"... ({len(diff) - max_lines} more lines in the transcript)"]
    return "\n".join([result["reason"], *diff])
