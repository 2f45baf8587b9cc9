"""The run manifest, `OUT/run.json`: what a run was and how each of its runs ended.

Every `glmrun run` writes it after the last transcript (also when interrupted or stopped), so
`diff`, `--last-failed`, `--baseline`, reports and other tools read one small file instead of
re-parsing every transcript. The shape (`glmrun-run/1`) is a contract: fields may be added,
never renamed; README's "The run manifest" lists them. Folders written before it have no
run.json: `read_runs` then falls back to the transcripts.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glmrun import __version__
from glmrun.safety.atomic import write_json_atomically

if TYPE_CHECKING:
    from glmrun.output.summary import RunSummary
    from glmrun.plan.plans import RunPlan
    from glmrun.safety.redaction import Redactor

FORMAT = "glmrun-run/1"
MANIFEST_NAME = "run.json"
STATUSES = ("passed", "failed", "error", "not_run")


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One run as the manifest (or, for an older folder, its transcript) tells it."""

    id: str
    status: str  # passed | failed | error | not_run
    reply_hash: str | None = None  # of the final reply; None without one
    tokens: int = 0
    latency_s: float = 0.0
    model: str | None = None
    file: str | None = None
    conversation: str | None = None
    transcript: str | None = None  # relative to the folder
    reply: str | None = None  # the final reply, when read from the transcript (`reply_read`)
    reply_read: bool = False


def git_state(folder: Path) -> dict[str, Any] | None:
    """The commit checked out in `folder`'s repository and whether the tree has changes; None
    outside a repository (or without git)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if commit is None:
        return None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(changes) if changes is not None else None}


def build(
    plans: Sequence[RunPlan],
    summary: RunSummary,
    *,
    out_dir: Path,
    formats: Sequence[str],
    command: Sequence[str] | None,
    settings: Mapping[str, Any],
    started_at: str,
    finished_at: str,
    earlier: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a run of `plans` that ended with `summary`.

    `earlier` (`--last-failed`: the folder's manifest before this run) contributes the runs
    this one did not repeat, marked `"earlier": true`, so the folder's run.json stays whole.
    """
    from glmrun.plan.ids import case_key, run_id

    rows = {r.id: r for r in summary.rows}
    suffix = ".json" if "json" in formats else ".md"
    runs: list[dict[str, Any]] = []
    for plan in plans:
        plan_id = plan.id
        row = rows.get(plan_id)
        measure = summary.measures.get(plan_id)
        fallback_model = plan.model
        if row is not None:
            status, tokens, latency_ms = row.status, row.tokens, row.latency_ms
            model, reply, cost = row.model or fallback_model, row.reply_hash, row.cost
            failures = [f.splitlines()[0] for f in row.failures if f] or (
                [row.error] if row.error else [])
        elif measure is not None:
            status, (tokens, latency_ms, model, reply, cost), failures = "passed", measure, []
        else:
            status, tokens, latency_ms, model, failures = "not_run", 0, 0.0, fallback_model, []
            reply, cost = None, None
        transcript: str | None = plan_id + suffix
        if status == "not_run" or not os.path.exists(os.path.join(out_dir, plan_id + suffix)):
            transcript = None  # not run, or it could not even be rendered
        case = None if plan.case_index is None else case_key(plan.case_vars, plan.case_index)
        runs.append({
            "id": plan_id, "status": status, "file": plan.source,
            "conversation": plan.spec.name,
            "case": case,
            "case_index": plan.case_index,
            "model": model,
            "repeat": None if plan.repeat_index is None else plan.repeat_index + 1,
            "tokens": tokens, "cost": None if cost is None else round(cost, 8),
            "latency_s": round(latency_ms / 1000, 3),
            "transcript": transcript, "failures": failures, "reply_hash": reply,
            # the same run on any model of a matrix: what `glmrun.output.matrix` lines up
            "id_without_model": run_id(plan.conversation, case, None, plan.repeat_index),
        })
    if earlier is not None:
        done = {r["id"] for r in runs}
        runs += [{**r, "earlier": True} for r in earlier.get("runs") or [] if r["id"] not in done]
    runs.sort(key=lambda r: str(r["id"]))
    counts = {s: 0 for s in STATUSES}
    for run in runs:
        counts[run["status"]] += 1
    models = list(dict.fromkeys(str(r["model"]) for r in runs))
    folder = plans[0].spec.file.parent if plans else Path.cwd()
    return {
        "format": FORMAT,
        "glmrun_version": __version__,
        "started_at": started_at, "finished_at": finished_at, "wall_s": round(summary.wall_s, 3),
        "git": git_state(folder),
        "command": list(command) if command is not None else None,
        "settings": {"mode": None, "concurrency": None, "models": models,
                     "formats": list(formats), "shard": None, **settings},
        "totals": {"runs": len(runs), "passed": counts["passed"], "failed": counts["failed"],
                   "errors": counts["error"], "not_run": counts["not_run"],
                   "tokens": sum(int(r["tokens"]) for r in runs), "cost": total_cost(runs)},
        "interrupted": summary.interrupted,
        "stopped": str(summary.fatal) if summary.fatal is not None else None,
        "runs": runs,
    }


def total_cost(runs: Sequence[Mapping[str, Any]]) -> float | None:
    """The runs' costs summed (CNY), of those whose model has a price; None when none has."""
    costs = [float(r["cost"]) for r in runs if r.get("cost") is not None]
    return round(sum(costs), 8) if costs else None


def write(out_dir: Path, manifest: Mapping[str, Any], redactor: Redactor | None = None) -> Path:
    """Write `OUT/run.json` atomically (fsynced: it is the one file a CI job reads), with the
    secrets of `redactor` replaced."""
    path = Path(out_dir) / MANIFEST_NAME
    write_json_atomically(path, manifest, redactor=redactor)
    return path


def read(out_dir: Path) -> dict[str, Any] | None:
    """The manifest in `out_dir`, or None when there is none (or it is not one of ours)."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not str(data.get("format", "")).startswith("glmrun-run/"):
        return None
    return data


def read_runs(out_dir: Path) -> tuple[list[RunEntry], str]:
    """Every run recorded in `out_dir` and where they came from ("run.json", "transcripts").

    The manifest when there is one; else (a folder written before run.json) the transcripts.
    """
    manifest = read(out_dir)
    if manifest is not None:
        return [RunEntry(
            id=str(r["id"]), status=str(r["status"]), tokens=int(r.get("tokens") or 0),
            latency_s=float(r.get("latency_s") or 0.0), model=r.get("model"),
            file=r.get("file"), conversation=r.get("conversation"),
            reply_hash=r.get("reply_hash"), transcript=r.get("transcript"),
        ) for r in manifest.get("runs") or []], MANIFEST_NAME
    return list(_from_transcripts(out_dir)), "transcripts"


def _from_transcripts(out_dir: Path) -> Iterator[RunEntry]:
    from glmrun.output.summary import reply_hash
    from glmrun.output.transcript import final_reply, iter_transcripts

    for t in iter_transcripts(Path(out_dir)):
        yield RunEntry(
            id=str(t.get("id", "")), status=str(t.get("status", "")),
            reply_hash=reply_hash(final_reply(t)), reply=final_reply(t), reply_read=True,
            tokens=int((t.get("usage") or {}).get("total_tokens", 0)),
            latency_s=sum(float(c.get("latency_ms") or 0) for c in t.get("calls") or []) / 1000,
            model=t.get("model"), file=(t.get("source") or {}).get("file"),
            conversation=t.get("name"),
        )


def summary_of(manifest: Mapping[str, Any], exit_code: int) -> dict[str, Any]:
    """The run in brief, for `--summary-json`: totals, by conversation, by model, what failed."""
    import dataclasses

    from glmrun.output import matrix

    by_conversation: dict[tuple[str, str], dict[str, Any]] = {}
    for run in manifest.get("runs") or []:
        key = (str(run.get("file")), str(run.get("conversation")))
        row = by_conversation.setdefault(key, {
            "file": key[0], "conversation": key[1], "runs": 0, "passed": 0, "failed": 0,
            "errors": 0, "not_run": 0, "tokens": 0})
        row["runs"] += 1
        row[{"error": "errors"}.get(run["status"], run["status"])] += 1
        row["tokens"] += int(run.get("tokens") or 0)
    return {
        "format": "glmrun-summary/1",
        "exit_code": exit_code,
        "totals": manifest.get("totals"),
        "conversations": sorted(by_conversation.values(),
                                key=lambda r: (r["file"], r["conversation"])),
        "models": [{**dataclasses.asdict(c), "pass_rate": round(c.pass_rate, 4)}
                   for c in matrix.columns(manifest)],
        "not_passed": [{"id": r["id"], "status": r["status"], "failures": r.get("failures", [])}
                       for r in manifest.get("runs") or [] if r["status"] != "passed"],
    }


CSV_FIELDS = ("id", "status", "file", "conversation", "case", "model", "repeat", "tokens",
              "cost", "latency_s", "transcript", "failures")


def write_csv(manifest: Mapping[str, Any], path: Path) -> None:
    """One row per run (`--summary-csv`); failures joined by ' | '."""
    import csv
    import io

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    for run in manifest.get("runs") or []:
        writer.writerow(["" if run.get(f) is None else
                         " | ".join(run[f]) if f == "failures" else run[f] for f in CSV_FIELDS])
    path.parent.mkdir(parents=True, exist_ok=True)
    from glmrun.safety.atomic import write_atomically

    write_atomically(path, [buffer.getvalue().encode("utf-8")])
