"""What a report shows, read from a run's folder: its manifest (run.json) when there is one,
else its transcripts; and what a diff report shows, from two folders.

Everything here is plain data (dicts, lists, numbers, strings) ready for the templates: the
table's rows go into the page as compact JSON, each transcript as its own JSON block that the
page parses only when the conversation is opened.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glmrun.diff import ConversationChange, RunDiff, RunRow, compare_rows
from glmrun.transcript import iter_transcripts, read_complete, text_of

MANIFEST = "run.json"
STATUSES = ("passed", "failed", "error", "not_run")
# The table's columns, in the order of each row's values in the page's JSON.
COLUMNS = ("id", "status", "conversation", "case", "model", "tokens", "latency_ms", "failures",
           "reply", "transcript", "cost", "file", "mode")


@dataclass(frozen=True)
class Bar:
    """One bar of a chart: its label, its value and its share of the chart's width or height."""

    label: str
    value: float
    share: float  # 0..1
    text: str  # the value for people
    good: float = 1.0  # passed share (pass-rate bars), else 1


@dataclass(frozen=True)
class Chart:
    title: str
    bars: tuple[Bar, ...]
    note: str = ""  # e.g. "12 more not shown"


@dataclass
class Report:
    """A run as the report template needs it."""

    title: str
    header: dict[str, Any]
    rows: list[list[Any]]
    transcripts: list[Mapping[str, Any]]
    models: list[str]
    matrix: bool  # some case ran on more than one model: show them side by side
    charts: list[Chart] = field(default_factory=list)


# --- reading a run ---------------------------------------------------------------------------


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The run's manifest, or None for a folder without one (older runs) or a broken one."""
    try:
        data = json.loads((Path(out_dir) / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        return None
    return data


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def cost_of(t: Mapping[str, Any]) -> float | None:
    """A transcript's cost, wherever a version of glmrun put it (absent until prices exist)."""
    for holder in (t, t.get("extra") or {}, t.get("usage") or {}):
        value = holder.get("cost") if isinstance(holder, Mapping) else None
        if isinstance(value, Mapping):
            value = value.get("total")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def case_label(case: object) -> str | None:
    """A short label for a case: its 1-based number and its variables."""
    if isinstance(case, Mapping):
        values = case.get("vars") or {}
        shown = " ".join(f"{k}={v}" for k, v in values.items()) if isinstance(values, Mapping) \
            else str(values)
        return f"#{int(case.get('index', 0)) + 1} {shown}".strip()
    return None if case is None else str(case)


def assistant_text(t: Mapping[str, Any]) -> str:
    """Every assistant message's text, for the table's search over replies."""
    texts = (text_of(m.get("content")) for m in t.get("messages") or []
             if isinstance(m, Mapping) and m.get("role") == "assistant")
    return "\n".join(x for x in texts if x)


def failures_of(t: Mapping[str, Any]) -> list[str]:
    """Short texts of the failed expectations, then the error's message."""
    out = [f"{e.get('kind')}: {e.get('reason')}" for e in t.get("expectations") or []
           if isinstance(e, Mapping) and not e.get("passed")]
    error = t.get("error")
    if isinstance(error, Mapping):
        out.append(f"{error.get('kind')}: {error.get('message')}")
    return out


def _row(entry: Mapping[str, Any], t: Mapping[str, Any] | None, index: int | None) -> list[Any]:
    """One table row from a manifest entry (may be empty) and its transcript (may be absent)."""
    t = t or {}
    source = t.get("source") or {}
    latency = entry.get("latency_s")
    latency_ms = float(latency) * 1000 if isinstance(latency, (int, float)) else (
        float(t["duration_ms"]) if isinstance(t.get("duration_ms"), (int, float)) else None)
    tokens = entry.get("tokens")
    if not isinstance(tokens, int):
        tokens = (t.get("usage") or {}).get("total_tokens")
    cost = entry.get("cost")
    if not isinstance(cost, (int, float)):
        cost = cost_of(t)
    failures = entry.get("failures")
    if not isinstance(failures, list):
        failures = failures_of(t)
    case = entry["case"] if entry.get("case") is not None else case_label(t.get("case"))
    values = {
        "id": str(entry.get("id") or t.get("id") or ""),
        "status": str(entry.get("status") or t.get("status") or "not_run"),
        "conversation": str(entry.get("conversation") or t.get("name") or ""),
        "case": None if case is None else str(case),
        "model": str(entry.get("model") or t.get("model") or ""),
        "tokens": tokens,
        "latency_ms": None if latency_ms is None else round(latency_ms, 1),
        "failures": [str(f) for f in failures],
        "reply": assistant_text(t),
        "transcript": index,
        "cost": cost,
        "file": str(entry.get("file") or source.get("file") or ""),
        "mode": t.get("mode"),
    }
    return [values[c] for c in COLUMNS]


def _from_manifest(out_dir: Path, manifest: Mapping[str, Any]
                   ) -> tuple[list[list[Any]], list[Mapping[str, Any]]]:
    rows: list[list[Any]] = []
    kept: list[Mapping[str, Any]] = []
    for entry in manifest["runs"]:
        if not isinstance(entry, Mapping):
            continue
        name = entry.get("transcript")
        t = read_complete(out_dir / str(name)) if isinstance(name, str) and name else None
        if t is not None:
            kept.append(t)
        rows.append(_row(entry, t, len(kept) - 1 if t is not None else None))
    return rows, kept


def _from_transcripts(out_dir: Path) -> tuple[list[list[Any]], list[Mapping[str, Any]]]:
    kept: list[Mapping[str, Any]] = list(iter_transcripts(out_dir))
    kept.sort(key=lambda t: str(t.get("id", "")))
    return [_row({}, t, i) for i, t in enumerate(kept)], kept


def _header(out_dir: Path, manifest: Mapping[str, Any] | None, rows: Sequence[Sequence[Any]],
            transcripts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    col = {c: i for i, c in enumerate(COLUMNS)}
    counts = dict.fromkeys(STATUSES, 0)
    for r in rows:
        counts[r[col["status"]]] = counts.get(r[col["status"]], 0) + 1
    def used(key: str) -> int:
        return sum(int(_mapping(t.get("usage")).get(key) or 0) for t in transcripts)

    tokens = sum(int(r[col["tokens"]] or 0) for r in rows)
    costs = [float(r[col["cost"]]) for r in rows if isinstance(r[col["cost"]], (int, float))]
    starts = sorted(str(t["started_at"]) for t in transcripts if t.get("started_at"))
    ends = sorted(str(t["finished_at"]) for t in transcripts if t.get("finished_at"))
    m = manifest or {}
    totals, git = _mapping(m.get("totals")), _mapping(m.get("git"))
    wall = m.get("wall_s")
    if not isinstance(wall, (int, float)) and starts and ends:
        from datetime import datetime

        try:
            wall = (datetime.fromisoformat(ends[-1].replace("Z", "+00:00"))
                    - datetime.fromisoformat(starts[0].replace("Z", "+00:00"))).total_seconds()
        except ValueError:
            wall = None
    cost = totals.get("cost") if isinstance(totals.get("cost"), (int, float)) else (
        sum(costs) if costs else None)
    models = sorted({str(r[col["model"]]) for r in rows if r[col["model"]]})
    versions = sorted({str(t.get("glmrun_version")) for t in transcripts
                       if t.get("glmrun_version")})
    command = m.get("command")
    return {
        "folder": str(out_dir),
        "started_at": m.get("started_at") or (starts[0] if starts else None),
        "finished_at": m.get("finished_at") or (ends[-1] if ends else None),
        "wall_s": wall if isinstance(wall, (int, float)) else None,
        "commit": git.get("commit"),
        "dirty": bool(git.get("dirty")),
        "command": " ".join(map(str, command)) if isinstance(command, list) else None,
        "glmrun_version": m.get("glmrun_version") or (", ".join(versions) or None),
        "models": models,
        "runs": len(rows),
        "counts": counts,
        "tokens": tokens,
        "prompt_tokens": used("prompt_tokens"),
        "completion_tokens": used("completion_tokens"),
        "cached_tokens": used("cached_tokens"),
        "reasoning_tokens": used("reasoning_tokens"),
        "cost": cost,
        "unpriced": sum(1 for t in transcripts if cost_of(t) is None),
        "manifest": manifest is not None,
    }


def load_report(out_dir: Path) -> Report:
    """Everything the report shows about the run in `out_dir`."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    rows, kept = _from_manifest(out_dir, manifest) if manifest else _from_transcripts(out_dir)
    header = _header(out_dir, manifest, rows, kept)
    return Report(title=f"glmrun report — {out_dir.name or out_dir}", header=header, rows=rows,
                  transcripts=kept, models=header["models"], matrix=_is_matrix(rows),
                  charts=charts(rows, header))


def _is_matrix(rows: Sequence[Sequence[Any]]) -> bool:
    col = {c: i for i, c in enumerate(COLUMNS)}
    models: dict[tuple[Any, ...], set[str]] = {}
    for r in rows:
        key = (r[col["file"]], r[col["conversation"]], r[col["case"]])
        models.setdefault(key, set()).add(r[col["model"]])
    return any(len(m) > 1 for m in models.values())


# --- charts ----------------------------------------------------------------------------------


def _fmt_ms(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def pass_rate_chart(rows: Sequence[Sequence[Any]], by: str, limit: int = 16) -> Chart:
    """Pass rate per conversation (or per model), lowest first."""
    col = {c: i for i, c in enumerate(COLUMNS)}
    groups: dict[str, list[int]] = {}
    for r in rows:
        g = groups.setdefault(str(r[col[by]]), [0, 0])
        g[0] += r[col["status"]] == "passed"
        g[1] += 1
    ranked = sorted(groups.items(), key=lambda kv: (kv[1][0] / kv[1][1], kv[0]))
    bars = tuple(Bar(label=name, value=p / n, share=p / n, good=p / n,
                     text=f"{p}/{n}") for name, (p, n) in ranked[:limit])
    more = len(ranked) - limit
    return Chart(title=f"Pass rate by {by}", bars=bars,
                 note=f"{more} more, all higher" if more > 0 else "")


def histogram(values: Iterable[float], title: str, unit: str, bins: int = 12) -> Chart:
    """A distribution as bars over equal-width ranges."""
    xs = sorted(v for v in values if v is not None and math.isfinite(v))
    if not xs:
        return Chart(title=title, bars=())
    lo, hi = xs[0], xs[-1]
    width = (hi - lo) / bins if hi > lo else 1.0
    counts = [0] * bins
    for x in xs:
        counts[min(int((x - lo) / width), bins - 1)] += 1
    top = max(counts)

    def edge(x: float) -> str:
        return _fmt_ms(x) if unit == "ms" else f"{x:.0f}"

    bars = tuple(Bar(label=f"{edge(lo + i * width)} – {edge(lo + (i + 1) * width)}",
                     value=c, share=c / top, text=str(c)) for i, c in enumerate(counts))
    note = f"median {edge(xs[len(xs) // 2])} · max {edge(hi)}"
    return Chart(title=title, bars=bars, note=note)


def charts(rows: Sequence[Sequence[Any]], header: Mapping[str, Any]) -> list[Chart]:
    col = {c: i for i, c in enumerate(COLUMNS)}
    by = "model" if len(header["models"]) > 1 else "conversation"
    return [
        pass_rate_chart(rows, by),
        histogram((float(r[col["latency_ms"]]) for r in rows
                   if isinstance(r[col["latency_ms"]], (int, float))), "Latency", "ms"),
        histogram((float(r[col["tokens"]]) for r in rows
                   if isinstance(r[col["tokens"]], int)), "Tokens per run", "tokens"),
    ]


# --- the diff report -------------------------------------------------------------------------


@dataclass(frozen=True)
class SideBySide:
    """A reply diff as aligned line pairs: (tag, old line, new line); tag is equal / replace /
    delete / insert; a missing side is None."""

    lines: tuple[tuple[str, str | None, str | None], ...]


def side_by_side(old: str | None, new: str | None) -> SideBySide:
    a, b = (old or "").splitlines(), (new or "").splitlines()
    out: list[tuple[str, str | None, str | None]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        left, right = a[i1:i2], b[j1:j2]
        for k in range(max(len(left), len(right))):
            out.append((tag, left[k] if k < len(left) else None,
                        right[k] if k < len(right) else None))
    return SideBySide(tuple(out))


@dataclass(frozen=True)
class DiffEntry:
    change: ConversationChange
    lines: SideBySide | None


@dataclass
class DiffReport:
    title: str
    old: dict[str, Any]
    new: dict[str, Any]
    diff: RunDiff
    entries: list[DiffEntry]
    unchanged: int


def _rows_of(out_dir: Path) -> list[RunRow]:
    return [RunRow.of(t) for t in iter_transcripts(out_dir)]


def load_diff(old_dir: Path, new_dir: Path) -> DiffReport:
    """Two runs compared: status changes first (regressions, fixes, others), then changed replies,
    each with its final replies side by side."""
    old_rows, new_rows = _rows_of(Path(old_dir)), _rows_of(Path(new_dir))
    diff = compare_rows(old_rows, new_rows)
    entries = [DiffEntry(c, side_by_side(c.old.reply, c.new.reply) if c.reply_changed else None)
               for c in diff.changes]

    def about(d: Path, rows: list[RunRow]) -> dict[str, Any]:
        manifest = read_manifest(d) or {}
        git = _mapping(manifest.get("git"))
        return {"folder": str(d), "runs": len(rows),
                "passed": sum(r.status == "passed" for r in rows),
                "tokens": sum(r.total_tokens for r in rows),
                "started_at": manifest.get("started_at"), "commit": git.get("commit")}

    return DiffReport(
        title=f"glmrun diff — {Path(old_dir).name} → {Path(new_dir).name}",
        old=about(Path(old_dir), old_rows), new=about(Path(new_dir), new_rows), diff=diff,
        entries=entries, unchanged=len(diff.compared) - len(diff.changes),
    )
