"""What the user sees while a run goes: live tokens, a progress bar or plain lines, a summary.

Results (one line per conversation, the summary) go to `out` (stdout); progress goes to `err`
(stderr), so `glmrun ... > results.txt` keeps only results.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO, cast

from glmrun import errors
from glmrun.output.summary import RunRow, RunSummary, Tally
from glmrun.safety.redaction import Redactor, StreamRedactor
from glmrun.types import Delta

MARKS = {"passed": "✔", "failed": "✘", "error": "⚠"}


class _Redacting:
    """A text stream that replaces secrets (the API key) with *** before they reach the user.

    Each write is redacted whole: text that arrives in pieces (streamed tokens) goes through a
    StreamRedactor first.
    """

    def __init__(self, stream: TextIO, redactor: Redactor) -> None:
        self._stream = stream
        self._redactor = redactor

    def write(self, text: str) -> int:
        return self._stream.write(self._redactor.text(text))

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


def _preview(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _eta(done: int, total: int, elapsed: float) -> str:
    if done == 0 or done >= total:
        return "-"
    secs = elapsed / done * (total - done)
    return f"{int(secs // 60)}m{int(secs % 60):02d}s" if secs >= 60 else f"{secs:.0f}s"


class ConsoleReporter:
    """Terminal output for a run; thread-safe (workers call it concurrently)."""

    def __init__(
        self,
        *,
        out: TextIO,
        err: TextIO,
        verbosity: int = 0,
        progress: bool = True,
        tty: bool = False,
        live: bool | None = None,
        interval_s: float = 10.0,
        secrets: Sequence[str] | Redactor = (),
    ) -> None:
        self.redactor = Redactor.of(secrets)
        self.out = cast(TextIO, _Redacting(out, self.redactor)) if self.redactor else out
        self.err = cast(TextIO, _Redacting(err, self.redactor)) if self.redactor else err
        self.verbosity = verbosity
        self.progress_on = progress
        self.tty = tty
        self.live = live
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self.total = self.done = self.failed = self.errors = self.tokens = 0
        self.in_flight = 0
        self.concurrency = 0
        self._started = time.monotonic()
        self._last_status = self._started
        self._streaming: str | None = None  # the conversation whose tokens print live
        self._printed = False  # tokens of the current attempt are on the live line
        self._live_at: tuple[int, int] | None = None  # the (turn, round) the live line shows
        self._tails: dict[str, str] = {}
        self._streams: dict[str, StreamRedactor] = {}  # replies in flight, redacted as they come
        self._rich: Any = None

    # -- Reporter protocol -------------------------------------------------------------

    def started(self, total: int, skipped: int) -> None:
        self.total, self.done = total, skipped
        self._started = self._last_status = time.monotonic()
        if self.live is None:
            self.live = self.tty and total - skipped == 1 and self.verbosity >= 0
        if skipped:
            self._say(self.err, f"resuming: {skipped} of {total} conversations already done")
        if self.progress_on and self.tty and not self.live and total - skipped > 1:
            self._rich = _RichBar(self.err, total, skipped)

    def conversation_started(self, plan_id: str) -> None:
        with self._lock:
            if self.live and self._streaming is None:
                self._streaming = plan_id

    def delta(self, plan_id: str, delta: Delta, *, turn: int, round_: int) -> None:
        with self._lock:
            if not delta.content:
                return
            live = self.live and plan_id == self._streaming
            if not live and self._rich is None:
                return
            if live and self._live_at != (turn, round_):
                self._start_live_line(plan_id, turn, round_)
            text = self._redacted_piece(plan_id, delta.content)
            if live:
                self.out.write(text)
                self.out.flush()
                self._printed = True
            else:
                self._tails[plan_id] = (self._tails.get(plan_id, "") + text)[-80:]
                self._rich.tails(self._tails)

    def _start_live_line(self, plan_id: str, turn: int, round_: int) -> None:
        """End the reply on the live line (its held tail first) and label the next one."""
        tail = self._end_stream(plan_id)
        if self._printed:
            self.out.write(tail + "\n")
        where = f"turn {turn}" + (f", round {round_}" if round_ else "")
        self.out.write(f"[{plan_id} {where}] ")
        self._live_at = (turn, round_)
        self._printed = True

    def _redacted_piece(self, plan_id: str, text: str) -> str:
        if not self.redactor:
            return text
        stream = self._streams.get(plan_id)
        if stream is None:
            stream = self._streams[plan_id] = self.redactor.stream()
        return stream.feed(text)

    def _end_stream(self, plan_id: str) -> str:
        """The held tail of a reply that ended (or starts again), redacted."""
        stream = self._streams.pop(plan_id, None)
        return stream.flush() if stream is not None else ""

    def retrying(self, plan_id: str, error: errors.ApiError, wait_s: float) -> None:
        with self._lock:
            # A stream that broke mid-way is sent again from its start: close the partial
            # line so the retried reply does not run on from it.
            tail = self._end_stream(plan_id)
            if self.live and plan_id == self._streaming and self._printed:
                self.out.write(f"{tail} [{error.kind}: retrying]\n")
                self.out.flush()
                self._printed = False
                self._live_at = None  # the retried reply gets its label again
            if self._tails.pop(plan_id, None) is not None and self._rich is not None:
                self._rich.tails(self._tails)
        if self.verbosity > 0:
            self._say(self.err, f"  retry {plan_id} in {wait_s:.1f}s: {error}")

    def conversation_finished(self, row: RunRow, transcript: Mapping[str, Any]) -> None:
        with self._lock:
            self.done += 1
            self.tokens += row.tokens
            self.failed += row.status == "failed"
            self.errors += row.status == "error"
            if self._tails.pop(row.id, None) is not None and self._rich is not None:
                self._rich.tails(self._tails)
            tail = self._end_stream(row.id)
            if self._streaming == row.id:
                self._streaming = None
                self._printed = False
                self._live_at = None
                self.out.write(tail + "\n")
            if self.verbosity >= 0 or row.status != "passed":  # -q: only what did not pass
                line = self._result_line(row)
                if self.verbosity > 0:
                    line += "\n" + _conversation_text(transcript)
                if self._rich is not None:  # rich wraps long lines: redact before it does
                    self._rich.log(self.redactor.text(line))
                else:
                    self.out.write(line + "\n")
                    self.out.flush()
            if self._rich is not None:
                self._rich.update(self._counts())

    def status(self, in_flight: int, concurrency: int) -> None:
        with self._lock:
            self.in_flight, self.concurrency = in_flight, concurrency
            if self._rich is not None:
                self._rich.update(self._counts())
                return
            now = time.monotonic()
            if (self.progress_on and not self.tty and self.total > 1
                    and now - self._last_status >= self.interval_s):
                self._last_status = now
                self._say(self.err, "[progress] " + self._counts())

    def finished(self, summary: RunSummary) -> None:
        if self._rich is not None:
            self._rich.stop()
        self.out.write(render_summary(summary) + "\n")
        self.out.flush()

    # -- helpers -----------------------------------------------------------------------

    def _counts(self) -> str:
        elapsed = time.monotonic() - self._started
        return (
            f"{self.done}/{self.total} done, {self.failed} failed, {self.errors} errors, "
            f"{self.in_flight} in flight, concurrency {self.concurrency}, "
            f"{self.tokens} tokens, ETA {_eta(self.done, self.total, elapsed)}"
        )

    def _result_line(self, row: RunRow) -> str:
        mark = MARKS.get(row.status, "?")
        line = f"{mark} {row.id}  {row.tokens} tokens  {row.duration_ms / 1000:.2f}s"
        if row.status == "error" and row.error:
            return f"{line}  {row.error}"
        if row.status == "failed":
            return line + "".join(
                "\n    ✘ " + f.replace("\n", "\n      ") for f in row.failures)
        if not (self.live and self.verbosity >= 0) and row.reply_preview:
            line += f"  {_preview(row.reply_preview)}"
        return line

    def _say(self, stream: TextIO, text: str) -> None:
        stream.write(text + "\n")
        stream.flush()


def _conversation_text(transcript: Mapping[str, Any]) -> str:
    lines = []
    for msg in transcript.get("messages", []):
        content = msg.get("content")
        if not isinstance(content, str):
            content = " ".join(
                p.get("text", "[image]") for p in content or [] if isinstance(p, Mapping)
            )
        lines.append(f"    {msg.get('role')}: {content}")
    return "\n".join(lines) + "\n"


TABLE_ROWS = 30  # a bigger suite's table shows what did not pass first, then a count


def render_summary(summary: RunSummary) -> str:
    """The closing lines of a run: a table by conversation, counts, tokens, wall time and what
    to do next."""
    parts = [f"{_what_ran(summary.total, summary.conversations)}: "
             f"{summary.count('passed')} passed, {summary.count('failed')} failed, "
             f"{_plural(summary.count('error'), 'error')}"]
    if summary.skipped:
        parts.append(f"{summary.skipped} reused from an earlier run (--resume)")
    if summary.not_started:
        parts.append(f"{summary.not_started} not run")
    head = "; ".join(parts)
    lines = render_table(summary.tallies) if summary.finished > 1 else []
    tokens = f"tokens: {summary.tokens}"
    details = [f"{n} {what}" for n, what in ((summary.cached_tokens, "cached"),
                                             (summary.reasoning_tokens, "reasoning")) if n]
    if details:
        tokens += f" ({', '.join(details)})"
    if summary.cost is not None:
        tokens += f"   cost: {format_cost(summary.cost)}"
        if summary.unpriced:
            tokens += f" (+{summary.unpriced} without a price)"
    lines += [head, f"{tokens}   wall time: {summary.wall_s:.2f}s"]
    bad_groups = [g for g in summary.failed_groups()
                  if any(r.group == g and r.id != g for r in summary.rows)]
    for group in bad_groups:
        rows = [r for r in summary.rows if r.group == group]
        passed = sum(r.status == "passed" for r in rows)
        lines.append(f"repeat group {group}: {passed}/{len(rows)} passed, "
                     f"needs pass_rate {rows[0].pass_rate:g}")
    if summary.fatal is not None:
        lines.append(f"stopped: {summary.fatal}{_stop_hint(summary.fatal)}")
    return "\n".join(lines)


def _stop_hint(fatal: errors.ApiError | errors.OutputError) -> str:
    """What to do about the error that stopped the run."""
    if isinstance(fatal, errors.QuotaError):
        when = f"it resets at {fatal.reset_at} (Beijing time)" if fatal.reset_at else \
            "see Zhipu's message for when it resets"
        return f" — the account's quota is used up: {when}; then run again with --resume"
    return {
        "auth": " — authentication failed: check ZHIPUAI_API_KEY (or ZHIPU_API_KEY)",
        "balance": " — the account is out of balance: top it up, then run again with --resume",
        "account": " — the account cannot be used (Zhipu's message says why): "
                   "fix it, then run again with --resume",
    }.get(fatal.kind, "")


def render_table(tallies: Mapping[str, Tally], limit: int = TABLE_ROWS) -> list[str]:
    """One line per conversation (its cases and repeats together), aligned for a terminal or a
    CI log; those with failures or errors first. Past `limit` lines, the rest are counted on a
    last line."""
    if not tallies:
        return []
    names = sorted(tallies)
    shown = sorted(names, key=lambda n: tallies[n].failed + tallies[n].errors == 0)[:limit]
    width = min(max(len("conversation"), *(len(n) for n in shown)), 48)
    # cached / reasoning / cost columns only when some conversation has them
    details = any(tallies[n].cached_tokens or tallies[n].reasoning_tokens for n in names)
    costs = any(tallies[n].cost is not None for n in names)
    header = ("conversation".ljust(width) + "  runs  passed  failed  errors    tokens"
              + ("    cached  reasoning" if details else "") + "  time/run"
              + ("         cost" if costs else ""))
    lines = [header]
    for name in shown:
        t = tallies[name]
        label = name if len(name) <= width else name[: width - 1] + "…"
        line = (f"{label.ljust(width)}  {t.runs:>4}  {t.passed:>6}  {t.failed:>6}  "
                f"{t.errors:>6}  {t.tokens:>8}")
        if details:
            line += f"  {t.cached_tokens:>8}  {t.reasoning_tokens:>9}"
        line += f"  {t.duration_ms / t.runs / 1000:>7.2f}s"
        if costs:
            line += f"  {format_cost(t.cost) if t.cost is not None else '–':>11}"
        lines.append(line)
    hidden = set(names) - set(shown)
    if hidden:
        rest = sum((tallies[n] for n in hidden), Tally())
        lines.append(f"… {len(hidden)} more conversations: {rest.runs} runs, {rest.passed} "
                     f"passed, {rest.failed} failed, {_plural(rest.errors, 'error')}")
    return lines


def format_cost(cny: float) -> str:
    """A cost in CNY, to the fen for large sums and to 4 significant digits for small ones."""
    return f"¥{cny:.2f}" if cny >= 1 else f"¥{cny:.4g}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _what_ran(runs: int, conversations: int) -> str:
    """'3 conversations', or '15 runs of 7 conversations' when cases, repeats or models
    multiply them (the table above has one line per conversation)."""
    if conversations in (0, runs):
        return _plural(runs, "conversation")
    return f"{_plural(runs, 'run')} of {_plural(conversations, 'conversation')}"


class _RichBar:
    """A rich progress bar on stderr with the counts and the tails of replies in flight."""

    def __init__(self, stream: TextIO, total: int, done: int) -> None:
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._group_cls = Group
        self.console = Console(file=stream)
        self.progress = Progress(
            BarColumn(bar_width=24), TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task("run", total=total, completed=done, counts="")
        self._tails: dict[str, str] = {}
        self.live = Live(self._render(), console=self.console, refresh_per_second=8,
                         transient=False)
        self.live.start()

    def _render(self) -> Any:
        from rich.text import Text

        rows = [Text(f"{k}: {_preview(v, 70)}", style="dim")
                for k, v in list(self._tails.items())[:6]]
        return self._group_cls(self.progress, *rows)

    def tails(self, tails: Mapping[str, str]) -> None:
        self._tails = dict(tails)
        self.live.update(self._render())

    def update(self, counts: str) -> None:
        done = int(counts.split("/", 1)[0])
        self.progress.update(self.task, completed=done, counts=counts)
        self.live.update(self._render())

    def log(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)

    def stop(self) -> None:
        self.live.update(self._render())
        self.live.stop()
