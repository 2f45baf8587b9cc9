"""Compare two runs' transcripts by id: status changes, changed replies, token and latency deltas.

A regression is a conversation that passed in the old run and did not pass in the new one.
Each folder's run.json is read (its transcripts, for folders older than run.json); a
transcript is opened only to show a reply that changed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmrun.errors import NotARunError
from glmrun.output.manifest import MANIFEST_NAME, RunEntry, read_runs
from glmrun.output.manifest import read as read_manifest
from glmrun.output.markdown import format_ms, md_cell, md_code, md_fence, md_inline
from glmrun.output.transcript import final_reply, read_transcript


@dataclass(frozen=True)
class RunRow:
    """What the diff needs from one transcript."""

    id: str
    status: str
    reply: str | None  # the final assistant message's text
    total_tokens: int
    latency_ms: float  # sum of the calls' latency

    @classmethod
    def of(cls, t: Mapping[str, Any]) -> RunRow:
        return cls(
            id=str(t.get("id", "")),
            status=str(t.get("status", "")),
            reply=final_reply(t),
            total_tokens=int((t.get("usage") or {}).get("total_tokens", 0)),
            latency_ms=sum(float(c.get("latency_ms") or 0) for c in t.get("calls") or []),
        )


@dataclass(frozen=True)
class ConversationChange:
    """One conversation present in both runs."""

    old: RunRow
    new: RunRow
    reply_diff: str | None  # unified diff of the final replies when they differ

    @property
    def id(self) -> str:
        return self.new.id

    @property
    def regression(self) -> bool:
        return self.old.status == "passed" and self.new.status != "passed"

    @property
    def fixed(self) -> bool:
        return self.old.status != "passed" and self.new.status == "passed"

    @property
    def status_changed(self) -> bool:
        return self.old.status != self.new.status

    @property
    def reply_changed(self) -> bool:
        return self.reply_diff is not None

    @property
    def token_delta(self) -> int:
        return self.new.total_tokens - self.old.total_tokens

    @property
    def latency_delta_ms(self) -> float:
        return self.new.latency_ms - self.old.latency_ms

    @property
    def changed(self) -> bool:
        """Status, reply or tokens differ (latency always does, so it does not count)."""
        return self.status_changed or self.reply_changed or self.token_delta != 0

    @property
    def label(self) -> str:
        if self.regression:
            return "REGRESSION"
        if self.fixed:
            return "fixed"
        return "status" if self.status_changed else "changed"


@dataclass(frozen=True)
class RunDiff:
    """Two runs compared; totals are over the conversations present in both."""

    compared: tuple[ConversationChange, ...]  # by id
    new: tuple[RunRow, ...]  # only in the new run
    missing: tuple[RunRow, ...]  # only in the old run

    @property
    def changes(self) -> tuple[ConversationChange, ...]:
        """Changed conversations: regressions, fixes, other status changes, then the rest."""
        rank = {"REGRESSION": 0, "fixed": 1, "status": 2, "changed": 3}
        return tuple(sorted((c for c in self.compared if c.changed),
                            key=lambda c: (rank[c.label], c.id)))

    @property
    def regressions(self) -> tuple[ConversationChange, ...]:
        return tuple(c for c in self.compared if c.regression)

    @property
    def has_regression(self) -> bool:
        return any(c.regression for c in self.compared)

    @property
    def old_tokens(self) -> int:
        return sum(c.old.total_tokens for c in self.compared)

    @property
    def new_tokens(self) -> int:
        return sum(c.new.total_tokens for c in self.compared)

    @property
    def old_latency_ms(self) -> float:
        return sum(c.old.latency_ms for c in self.compared)

    @property
    def new_latency_ms(self) -> float:
        return sum(c.new.latency_ms for c in self.compared)


def _reply_diff(run_id: str, old: str | None, new: str | None) -> str | None:
    if old == new:
        return None
    lines = list(difflib.unified_diff(
        (old or "").splitlines(), (new or "").splitlines(),
        fromfile=f"{run_id} (old)", tofile=f"{run_id} (new)", lineterm="",
    ))
    if not lines:  # the texts differ only in line endings, or one is missing and one empty
        return f"--- {run_id} (old)\n+++ {run_id} (new)\n(only line endings or absence differ)"
    return "\n".join(lines)


def compare_rows(old: Iterable[RunRow], new: Iterable[RunRow]) -> RunDiff:
    """Match rows by id and compare them."""
    old_by_id = {r.id: r for r in old}
    new_by_id = {r.id: r for r in new}
    compared = tuple(
        ConversationChange(old_by_id[i], new_by_id[i],
                           _reply_diff(i, old_by_id[i].reply, new_by_id[i].reply))
        for i in sorted(old_by_id.keys() & new_by_id.keys())
    )
    return RunDiff(
        compared=compared,
        new=tuple(new_by_id[i] for i in sorted(new_by_id.keys() - old_by_id.keys())),
        missing=tuple(old_by_id[i] for i in sorted(old_by_id.keys() - new_by_id.keys())),
    )


def diff_runs(old_dir: Path, new_dir: Path) -> RunDiff:
    """Compare two output folders by their run.json (or, for older folders, their transcripts).

    Replies are read from the transcripts only where the two runs' reply hashes differ.
    Raises NotARunError when a folder holds neither a manifest nor a transcript.
    """
    old_entries, new_entries = _entries(Path(old_dir)), _entries(Path(new_dir))
    old_by_id = {e.id: e for e in old_entries}
    new_by_id = {e.id: e for e in new_entries}

    def row(entry: RunEntry, other: RunEntry | None, folder: Path) -> RunRow:
        reply = None
        if other is not None and (entry.reply_hash != other.reply_hash
                                  or entry.reply_hash is None or other.reply_hash is None):
            reply = entry.reply if entry.reply_read else _reply_of(folder, entry)
        return RunRow(id=entry.id, status=entry.status, reply=reply,
                      total_tokens=entry.tokens, latency_ms=entry.latency_s * 1000)

    return compare_rows(
        [row(e, new_by_id.get(e.id), Path(old_dir)) for e in old_entries],
        [row(e, old_by_id.get(e.id), Path(new_dir)) for e in new_entries],
    )


def _entries(folder: Path) -> list[RunEntry]:
    entries, _source = read_runs(folder)
    if not entries and read_manifest(folder) is None:
        raise NotARunError(
            f"{folder} is not a glmrun output folder: it has no {MANIFEST_NAME} and no "
            "transcripts (give the -o folder of a run, not the conversation files)")
    return entries


def _reply_of(folder: Path, entry: RunEntry) -> str | None:
    if not entry.transcript or not entry.transcript.endswith(".json"):
        return None
    try:
        return final_reply(read_transcript(folder / entry.transcript))
    except (OSError, ValueError):
        return None


def verdict(diff: RunDiff, *, allow_missing: bool = False) -> list[str]:
    """Why this comparison fails a CI job (empty: it passes).

    It fails when a run that passed no longer does, when runs of the old folder are missing
    from the new one (unless allowed), and when nothing at all could be compared.
    """
    reasons = []
    if not diff.compared:
        reasons.append("nothing compared: the two folders share no run id")
    n = len(diff.regressions)
    if n:
        reasons.append(f"{n} regression{'s' if n != 1 else ''}: passed before, not now")
    if diff.missing and not allow_missing:
        n = len(diff.missing)
        reasons.append(f"{n} run{'s' if n != 1 else ''} of the old folder missing from the new "
                       "one (--allow-missing accepts that)")
    return reasons


# --- rendering ------------------------------------------------------------------------------


def _signed_ms(ms: float) -> str:
    return ("-" if ms < 0 else "+") + format_ms(abs(ms))


def _tokens(old: int, new: int, arrow: str) -> str:
    return f"{old} {arrow} {new} ({new - old:+d})"


def _latency(old: float, new: float, arrow: str) -> str:
    return f"{format_ms(old)} {arrow} {format_ms(new)} ({_signed_ms(new - old)})"


def _status(c: ConversationChange, arrow: str) -> str:
    return f"{c.old.status} {arrow} {c.new.status}" if c.status_changed else c.new.status


def _counts(d: RunDiff) -> list[str]:
    counts = [f"{len(d.compared)} compared"]
    n_reg = len(d.regressions)
    counts.append(f"{n_reg} regression{'s' if n_reg != 1 else ''}")
    counts.append(f"{sum(c.fixed for c in d.compared)} fixed")
    n_rep = sum(c.reply_changed for c in d.compared)
    counts.append(f"{n_rep} repl{'ies' if n_rep != 1 else 'y'} changed")
    counts.append(f"{len(d.new)} new")
    counts.append(f"{len(d.missing)} missing")
    return counts


def render_text(diff: RunDiff) -> str:
    """The diff for a terminal: a summary, one aligned row per change, then the reply diffs."""
    out = [
        "glmrun diff: " + ", ".join(_counts(diff)),
        f"tokens {_tokens(diff.old_tokens, diff.new_tokens, '->')}, "
        f"latency {_latency(diff.old_latency_ms, diff.new_latency_ms, '->')}",
    ]
    rows = [
        [c.label, c.id, _status(c, "->"), _tokens(c.old.total_tokens, c.new.total_tokens, "->"),
         _latency(c.old.latency_ms, c.new.latency_ms, "->"),
         "changed" if c.reply_changed else ""]
        for c in diff.changes
    ]
    rows += [["new", r.id, r.status, str(r.total_tokens), format_ms(r.latency_ms), ""]
             for r in diff.new]
    rows += [["missing", r.id, r.status, "", "", ""] for r in diff.missing]
    if rows:
        rows.insert(0, ["change", "conversation", "status", "tokens", "latency", "reply"])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        out.append("")
        out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                for row in rows]
    else:
        out += ["", "no changes"]
    for c in diff.changes:
        if c.reply_diff is not None:
            out += ["", c.reply_diff]
    return "\n".join(out)


_MD_LABEL = {"REGRESSION": "❌ regression", "fixed": "✅ fixed", "status": "⚠️ status",
             "changed": "✏️ changed"}


def render_markdown(diff: RunDiff) -> str:
    """The diff as a pull-request comment: summary line, table of changes, folded reply diffs."""
    if diff.has_regression:
        n = len(diff.regressions)
        headline = f"❌ {n} regression{'s' if n != 1 else ''}"
    elif diff.changes or diff.new or diff.missing:
        headline = "✅ no regressions"
    else:
        headline = "✅ no changes"
    out = [
        f"**glmrun diff: {headline}** — " + " · ".join(_counts(diff))
        + f" · tokens {_tokens(diff.old_tokens, diff.new_tokens, '→')}"
        + f" · latency {_latency(diff.old_latency_ms, diff.new_latency_ms, '→')}"
    ]
    rows = [
        [_MD_LABEL[c.label], md_code(c.id), md_inline(_status(c, "→")),
         _tokens(c.old.total_tokens, c.new.total_tokens, "→"),
         _latency(c.old.latency_ms, c.new.latency_ms, "→"),
         "changed" if c.reply_changed else ""]
        for c in diff.changes
    ]
    rows += [["🆕 new", md_code(r.id), md_inline(r.status), str(r.total_tokens),
              format_ms(r.latency_ms), ""] for r in diff.new]
    rows += [["➖ missing", md_code(r.id), md_inline(r.status), "", "", ""]
             for r in diff.missing]
    if rows:
        table = ["| Change | Conversation | Status | Tokens | Latency | Reply |",
                 "| --- | --- | --- | --- | --- | --- |"]
        table += ["| " + " | ".join(md_cell(cell) for cell in row) + " |" for row in rows]
        out.append("\n".join(table))
    diffs = [c for c in diff.changes if c.reply_diff is not None]
    if diffs:
        body = "\n\n".join(f"{md_code(c.id)}\n\n{md_fence(c.reply_diff or '', 'diff')}"
                           for c in diffs)
        out.append(f"<details><summary>Reply diffs ({len(diffs)})</summary>\n\n{body}\n\n"
                   "</details>")
    return "\n\n".join(out)
