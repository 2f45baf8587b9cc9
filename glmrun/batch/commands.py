"""Batch mode as the CLI calls it: running plans through batch rounds (`run_batch`, and
`run_mixed` for a selection holding other modes too), then `glmrun batch status / fetch /
cancel` on an output folder's batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glmrun import errors
from glmrun.backends.base import Backend
from glmrun.backends.batch_api import BatchApi, BatchInfo
from glmrun.batch.collector import BatchBackend, BatchCollector, open_collector
from glmrun.batch.options import BatchOptions
from glmrun.batch.results import collect
from glmrun.batch.state import FAILED_ENDINGS, BatchState, open_state, run_state
from glmrun.output.summary import RunRow, Tally, add_costs
from glmrun.run.options import NullReporter, Reporter, RunOptions
from glmrun.run.runner import Runner
from glmrun.safety.redaction import Redactor
from glmrun.types import Delta

if TYPE_CHECKING:
    from glmrun.output.summary import RunSummary
    from glmrun.plan.plans import RunPlan


class _Forward:
    """A Reporter that passes everything on to another."""

    def __init__(self, inner: Reporter) -> None:
        self._inner = inner

    def started(self, total: int, skipped: int) -> None:
        self._inner.started(total, skipped)

    def conversation_started(self, plan_id: str) -> None:
        self._inner.conversation_started(plan_id)

    def delta(self, plan_id: str, delta: Delta, *, turn: int, round_: int) -> None:
        self._inner.delta(plan_id, delta, turn=turn, round_=round_)

    def retrying(self, plan_id: str, error: errors.ApiError, wait_s: float) -> None:
        self._inner.retrying(plan_id, error, wait_s)

    def conversation_finished(self, row: RunRow, transcript: Mapping[str, Any]) -> None:
        self._inner.conversation_finished(row, transcript)

    def status(self, in_flight: int, concurrency: int) -> None:
        self._inner.status(in_flight, concurrency)

    def finished(self, summary: RunSummary) -> None:
        self._inner.finished(summary)


class _Tracking(_Forward):
    """Also tells the collector how many conversations run, and when each starts and ends
    (which request is whose comes with the request: `RequestIdentity`)."""

    def __init__(self, inner: Reporter, collector: BatchCollector) -> None:
        super().__init__(inner)
        self._collector = collector

    def started(self, total: int, skipped: int) -> None:
        self._collector.expect(total - skipped)
        super().started(total, skipped)

    def conversation_started(self, plan_id: str) -> None:
        self._collector.conversation_started()
        super().conversation_started(plan_id)

    def conversation_finished(self, row: RunRow, transcript: Mapping[str, Any]) -> None:
        self._collector.conversation_finished()
        super().conversation_finished(row, transcript)


class _HoldSummary(_Forward):
    """Keeps back `finished`: a mixed run reports one summary for both of its parts."""

    def finished(self, summary: RunSummary) -> None:
        pass


def as_batch_api(backend: Backend) -> BatchApi:
    if not isinstance(backend, BatchApi):
        raise errors.InputError(
            "batch mode needs the Zhipu backend directly (it cannot be combined with "
            "--record / --replay / --cache)"
        )
    return backend


def run_batch(
    plans: Sequence[RunPlan],
    backend_for: Callable[[str | None], Backend],
    options: RunOptions,
    reporter: Reporter | None,
    batch: BatchOptions,
    *,
    on_runner: Callable[[Any], None] | None = None,
) -> RunSummary:
    """Run batch-mode plans to the end (or leave their batches running with `wait=False`).

    At most `limits.wave` conversations run at once. A waiting run refills one runner's threads
    as conversations end; with `wait=False` each wave gets its own runner, because a
    conversation left waiting on a batch ends mid-call and its runner never gets that request
    slot back.
    """
    wave = max(1, batch.limits.wave)
    collector = open_collector(options.out_dir, batch, plans, min(wave, len(plans)),
                               Redactor(options.secrets))
    collector.state.set_run(run_state(batch.selection, options.formats, options.base_url))
    collector.state.save()
    inner = reporter or NullReporter()
    waves = [list(plans)] if batch.wait else [
        list(plans[i : i + wave]) for i in range(0, len(plans), wave)]
    summaries: list[RunSummary] = []
    collector.start()
    try:
        for members in waves:
            summary = _run_wave(members, backend_for, options, _HoldSummary(inner), collector,
                                on_runner)
            summaries.append(summary)
            if summary.interrupted or summary.fatal is not None:
                break
    finally:
        collector.close()
    merged = summaries[0]
    for more in summaries[1:]:
        merged = merge_summaries(merged, more)
    unplanned = len(plans) - merged.total
    merged.total += unplanned
    merged.not_started += unplanned
    if not merged.interrupted:  # left on purpose (--no-wait): not "could not complete"
        merged.not_started = max(0, merged.not_started - collector.left_waiting)
    inner.finished(merged)
    return merged


def _run_wave(
    plans: Sequence[RunPlan],
    backend_for: Callable[[str | None], Backend],
    options: RunOptions,
    reporter: Reporter,
    collector: BatchCollector,
    on_runner: Callable[[Any], None] | None,
) -> RunSummary:
    def factory(url: str | None) -> Backend:
        return BatchBackend(collector, as_batch_api(backend_for(url)))

    concurrency = max(1, min(collector.options.limits.wave, len(plans)))
    # Every conversation holds its request slot while it waits for a round: a gate that
    # narrowed on a rate-limited line would leave conversations outside every round.
    run_options = dataclasses.replace(options, concurrency=concurrency, adaptive=False,
                                      rpm=None, tpm=None)
    runner = Runner(factory, run_options, _Tracking(reporter, collector))
    try:
        for url in {options.base_url or p.spec.base_url for p in plans}:
            runner.backend(url)  # bad settings fail here, not inside a worker thread
        collector.attach(runner.stop)
        if on_runner is not None:
            on_runner(runner)
        return runner.run(plans)
    finally:
        runner.close()


def run_mixed(
    plans: Sequence[RunPlan],
    backend_for: Callable[[str | None], Backend],
    options: RunOptions,
    reporter: Reporter | None,
    batch: BatchOptions,
    *,
    on_runner: Callable[[Any], None] | None = None,
) -> RunSummary:
    """Run a selection holding batch-mode plans: the others first (as usual), then the batch
    ones; one summary for both."""
    batched = [p for p in plans if p.mode == "batch"]
    others = [p for p in plans if p.mode != "batch"]
    if not others:
        return run_batch(batched, backend_for, options, reporter, batch, on_runner=on_runner)
    inner = reporter or NullReporter()
    held = _HoldSummary(inner)
    runner = Runner(backend_for, options, held)
    if on_runner is not None:
        on_runner(runner)
    try:
        first = runner.run(others)
    finally:
        runner.close()
    if first.interrupted or first.fatal is not None:
        first.not_started += len(batched)
        first.total += len(batched)
        first.conversations += len({p.conversation for p in batched})
        inner.finished(first)
        return first
    second = run_batch(batched, backend_for, options, held, batch, on_runner=on_runner)
    merged = merge_summaries(first, second)
    inner.finished(merged)
    return merged


def merge_summaries(a: RunSummary, b: RunSummary) -> RunSummary:
    """One summary for two runs made one after the other."""
    return dataclasses.replace(
        a, total=a.total + b.total, skipped=a.skipped + b.skipped,
        conversations=a.conversations + b.conversations,
        rows=sorted(a.rows + b.rows, key=lambda r: r.id),
        passed_ids=sorted(a.passed_ids + b.passed_ids), tokens=a.tokens + b.tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        cost=add_costs(a.cost, b.cost), unpriced=a.unpriced + b.unpriced,
        tallies={k: a.tallies.get(k, Tally()) + b.tallies.get(k, Tally())
                 for k in sorted({*a.tallies, *b.tallies})},
        wall_s=a.wall_s + b.wall_s, interrupted=a.interrupted or b.interrupted,
        not_started=a.not_started + b.not_started, fatal=a.fatal or b.fatal,
        peak_in_flight=max(a.peak_in_flight, b.peak_in_flight),
        measures={**a.measures, **b.measures},
        models={k: a.models.get(k, Tally()) + b.models.get(k, Tally())
                for k in {*a.models, *b.models}},
    )


# -- status and fetch ------------------------------------------------------------------


@dataclass(frozen=True)
class BatchView:
    """A batch as `glmrun batch status` shows it: the server's view and what state.json knows."""

    info: BatchInfo
    model: str | None = None
    requests: int | None = None
    collected: bool = False


def view_line(view: BatchView) -> str:
    b = view.info
    bits = [b.id, b.status, f"{b.completed}/{b.total} done, {b.failed} failed"]
    if view.model:
        bits.append(f"model {view.model}")
    bits += [f"input {b.input_file_id}" if b.input_file_id else "",
             f"output {b.output_file_id}" if b.output_file_id else "",
             f"errors {b.error_file_id}" if b.error_file_id else "",
             "collected" if view.collected else ""]
    line = "  ".join(x for x in bits if x)
    return line + "".join(f"\n  {e}" for e in b.errors)


def chosen_batches(state: BatchState, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The named batches of state.json (default: those not collected yet)."""
    if not state.exists:
        raise errors.InputError(f"no batch state in {state.path} (was this folder used with "
                                "--mode batch?)")
    entries = state.batches()
    if not ids:
        return [e for e in entries if not e.get("collected")]
    by_id = {e["id"]: e for e in entries}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise errors.InputError(f"{', '.join(missing)}: not in {state.path}")
    return [by_id[i] for i in ids]


@dataclass(frozen=True)
class FetchResult:
    """What `fetch` found: the batches it collected, and those still running."""

    collected: tuple[BatchInfo, ...]
    running: tuple[BatchInfo, ...]

    @property
    def failed_ids(self) -> frozenset[str]:
        return frozenset(b.id for b in self.collected if b.status in FAILED_ENDINGS)


def fetch(
    out_dir: Path, ids: Sequence[str], api_for: Callable[[str | None], BatchApi]
) -> FetchResult:
    """Look at the named batches (default: every one not collected); download the results of
    those that ended into the store. Nothing is collected while any named batch still runs."""
    state, store = open_state(out_dir)
    entries = chosen_batches(state, ids)
    looked: list[tuple[dict[str, Any], BatchInfo, BatchApi]] = []
    for entry in entries:
        api = api_for(entry.get("base_url"))
        info = api.get_batch(entry["id"])
        state.update(info)
        looked.append((entry, info, api))
    running = tuple(info for _e, info, _a in looked if not info.terminal)
    if running:
        return FetchResult((), running)
    for _entry, info, api in looked:
        collect(state, store, info, api)
    return FetchResult(tuple(info for _e, info, _a in looked), ())


def statuses(
    out_dir: Path, ids: Sequence[str], api_for: Callable[[str | None], BatchApi]
) -> list[BatchView]:
    """The server's view of the named batches (default: every batch recorded in out_dir).

    Named batches need not be in out_dir's state; those that are get their state refreshed.
    """
    state = BatchState.load(out_dir)
    entries = {e["id"]: e for e in state.batches()}
    wanted = list(ids) or list(entries)
    if not wanted:
        raise errors.InputError(f"no batches recorded in {state.path}")
    views = []
    for batch_id in wanted:
        entry = entries.get(batch_id)
        info = api_for(entry["base_url"] if entry else None).get_batch(batch_id)
        if entry is not None:
            state.update(info)
            views.append(BatchView(info, entry.get("model"), len(entry["lines"]),
                                   bool(entry.get("collected"))))
        else:
            views.append(BatchView(info))
    return views


def cancel(
    out_dir: Path, ids: Sequence[str], api_for: Callable[[str | None], BatchApi]
) -> list[BatchInfo]:
    """Ask the server to cancel the named batches (default: every running one of out_dir)."""
    state = BatchState.load(out_dir)
    entries = [e for e in chosen_batches(state, ids) if e.get("status") not in FAILED_ENDINGS
               and not (e.get("collected") and not ids)]
    cancelled = []
    for entry in entries:
        info = api_for(entry.get("base_url")).cancel_batch(entry["id"])
        state.update(info)
        cancelled.append(info)
    return cancelled
