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
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from glmrun.output.diff import ConversationChange, RunDiff, RunRow, compare_rows
from glmrun.output.transcript import iter_transcripts, read_complete, text_of

MANIFEST = "run.json"
# How JSON is written into the page: compact UTF-8, keys in their order (the templates'
# `tojson` is set the same way); `<`, `>`, `&` and `'` are escaped so no block ends early.
JSON_STYLE: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":"),
                              "sort_keys": False}
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
    transcripts: list[Markup]  # each transcript as JSON text, safe inside <script>
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


@dataclass
class _Collected:
    """A run read one transcript at a time: the table's rows, each transcript as the page's
    JSON text (the parsed transcript is not kept: a big run stays small in memory) and the
    sums the header needs."""

    rows: list[list[Any]] = field(default_factory=list)
    embedded: list[Markup] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    first_start: str | None = None
    last_end: str | None = None
    versions: set[str] = field(default_factory=set)
    unpriced: int = 0

    def add(self, entry: Mapping[str, Any], t: Mapping[str, Any] | None) -> None:
        index = None
        if t is not None:
            index = len(self.embedded)
            self.embedded.append(htmlsafe_json_dumps(t, dumps=json.dumps, **JSON_STYLE))
            for key, value in _mapping(t.get("usage")).items():
                if isinstance(value, int):
                    self.usage[key] = self.usage.get(key, 0) + value
            start, end = t.get("started_at"), t.get("finished_at")
            if isinstance(start, str) and (self.first_start is None or start < self.first_start):
                self.first_start = start
            if isinstance(end, str) and (self.last_end is None or end > self.last_end):
                self.last_end = end
            if t.get("glmrun_version"):
                self.versions.add(str(t["glmrun_version"]))
            self.unpriced += cost_of(t) is None
        self.rows.append(_row(entry, t, index))


def _collect(out_dir: Path, manifest: Mapping[str, Any] | None) -> _Collected:
    got = _Collected()
    if manifest is None:
        for t in iter_transcripts(out_dir):
            got.add({}, t)
        return got
    for entry in manifest["runs"]:
        if isinstance(entry, Mapping):
            name = entry.get("transcript")
            got.add(entry, read_complete(out_dir / name) if isinstance(name, str) and name
                    else None)
    return got


def _header(out_dir: Path, manifest: Mapping[str, Any] | None, got: _Collected
            ) -> dict[str, Any]:
    col = {c: i for i, c in enumerate(COLUMNS)}
    rows = got.rows
    counts = dict.fromkeys(STATUSES, 0)
    for r in rows:
        counts[r[col["status"]]] = counts.get(r[col["status"]], 0) + 1
    tokens = sum(int(r[col["tokens"]] or 0) for r in rows)
    costs = [float(r[col["cost"]]) for r in rows if isinstance(r[col["cost"]], (int, float))]
    m = manifest or {}
    totals, git = _mapping(m.get("totals")), _mapping(m.get("git"))
    wall = m.get("wall_s")
    if not isinstance(wall, (int, float)) and got.first_start and got.last_end:
        try:
            wall = (datetime.fromisoformat(got.last_end.replace("Z", "+00:00"))
                    - datetime.fromisoformat(got.first_start.replace("Z", "+00:00"))
                    ).total_seconds()
        except ValueError:
            wall = None
    cost = totals.get("cost") if isinstance(totals.get("cost"), (int, float)) else (
        sum(costs) if costs else None)
    command = m.get("command")
    return {
        "folder": str(out_dir),
        "started_at": m.get("started_at") or got.first_start,
        "finished_at": m.get("finished_at") or got.last_end,
        "wall_s": wall if isinstance(wall, (int, float)) else None,
        "commit": git.get("commit"),
        "dirty": bool(git.get("dirty")),
        "command": " ".join(map(str, command)) if isinstance(command, list) else None,
        "glmrun_version": m.get("glmrun_version") or (", ".join(sorted(got.versions)) or None),
        "models": sorted({str(r[col["model"]]) for r in rows if r[col["model"]]}),
        "runs": len(rows),
        "counts": counts,
        "tokens": tokens,
        **{key: got.usage.get(key, 0) for key in
           ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")},
        "cost": cost,
        "unpriced": got.unpriced,
        "manifest": manifest is not None,
        "interrupted": bool(m.get("interrupted")),
        "stopped": str(m["stopped"]) if m.get("stopped") else None,
    }


def load_report(out_dir: Path) -> Report:
    """Everything the report shows about the run in `out_dir`."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    got = _collect(out_dir, manifest)
    header = _header(out_dir, manifest, got)
    return Report(title=f"glmrun report — {out_dir.name or out_dir}", header=header,
                  rows=got.rows, transcripts=got.embedded, models=header["models"],
                  matrix=_is_matrix(got.rows), charts=charts(got.rows, header))


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
    def lines(text: str | None) -> list[str]:  # only newlines end lines (not U+2028 & co.)
        return (text or "").replace("\r\n", "\n").split("\n") if text else []

    a, b = lines(old), lines(new)
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
