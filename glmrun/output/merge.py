"""`glmrun merge`: join the run folders of a sharded run (`--shard K/N`, plan/shards.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glmrun import errors
from glmrun.plan.shards import parse_shard
from glmrun.safety.atomic import write_atomically, write_json_atomically

if TYPE_CHECKING:
    from glmrun.output.summary import RunSummary

MANIFEST = "run.json"  # the run manifest's contract: format glmrun-run/1
FORMAT = "glmrun-run/1"
STATUSES = ("passed", "failed", "error", "not_run")


# -- glmrun merge -------------------------------------------------------------------------


@dataclass
class MergedRun:
    """The joined folder's manifest and the summary a whole run would have printed."""

    manifest: dict[str, Any]
    summary: RunSummary
    transcripts: list[Path] = field(default_factory=list)  # the JSON ones, in OUT
    missing: list[str] = field(default_factory=list)  # shards K/N whose folder is not here

    @property
    def exit_code(self) -> int:
        """The whole run's: 3 also when it stopped or a shard's folder is missing."""
        if self.manifest.get("stopped") or self.missing:
            return 3
        return self.summary.exit_code


@dataclass
class _Source:
    folder: Path
    manifest: dict[str, Any] | None
    transcripts: dict[str, dict[str, Any]]  # by run id


def merge(sources: Sequence[Path], out: Path) -> MergedRun:
    """Join the output folders of a sharded run into `out` as one run: transcripts copied,
    one run.json, the summary and exit code of the whole. Runs are never in two folders."""
    if not sources:
        raise errors.InputError("merge needs at least one folder")
    resolved_out = out.resolve()
    for folder in sources:
        if not folder.is_dir():
            raise errors.InputError(f"{folder} is not a folder of transcripts")
        if folder.resolve() == resolved_out:
            raise errors.InputError(f"-o {out} is one of the folders merged: name a new one")
    loaded = [_load(folder) for folder in sources]
    owner: dict[str, Path] = {}
    for src in loaded:
        for run_id in _run_ids(src):
            if run_id in owner:
                raise errors.InputError(
                    f"run {run_id} is in both {owner[run_id]} and {src.folder}: shards of one "
                    "run never overlap (the same folder twice, or folders of different runs?)")
            owner[run_id] = src.folder
    missing = _missing_shards(loaded)
    try:
        out.mkdir(parents=True, exist_ok=True)
        copied = _copy_transcripts(loaded, out)
    except OSError as exc:
        raise errors.OutputError(f"cannot write into {out}: {exc.strerror or exc}") from None
    manifest = _merged_manifest(loaded, out)
    summary = _summary(loaded, manifest)
    try:
        write_json_atomically(out / MANIFEST, manifest)
    except OSError as exc:
        raise errors.OutputError(f"cannot write {out}/run.json: {exc.strerror or exc}") from None
    return MergedRun(manifest, summary, copied, missing)


def _load(folder: Path) -> _Source:
    from glmrun.output.transcript import iter_transcripts

    manifest = None
    path = folder / MANIFEST
    if path.is_file():
        try:
            manifest = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise errors.InputError(f"{path}: not a run manifest ({exc})") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list):
            raise errors.InputError(f"{path}: not a run manifest (no runs)")
    transcripts = {str(t["id"]): t for t in iter_transcripts(folder)}
    if manifest is None and not transcripts:
        raise errors.InputError(f"{folder} has neither run.json nor transcripts")
    return _Source(folder, manifest, transcripts)


def _run_ids(src: _Source) -> list[str]:
    if src.manifest is not None:
        return [str(r["id"]) for r in src.manifest["runs"]]
    return list(src.transcripts)


def _missing_shards(loaded: Sequence[_Source]) -> list[str]:
    """The shards K/N not among the folders, when their manifests say they are shards."""
    seen: dict[int, set[int]] = {}
    for src in loaded:
        text = ((src.manifest or {}).get("settings") or {}).get("shard")
        if text:
            shard = parse_shard(str(text))
            seen.setdefault(shard.count, set()).add(shard.index)
    return [f"{k}/{n}" for n, got in sorted(seen.items())
            for k in sorted(set(range(1, n + 1)) - got)]


def _copy_transcripts(loaded: Sequence[_Source], out: Path) -> list[Path]:
    copied = []
    for src in loaded:
        for run_id in sorted(src.transcripts):
            for suffix in (".json", ".md"):
                path = src.folder / f"{run_id}{suffix}"
                if path.is_file():
                    write_atomically(out / path.name, [path.read_bytes()], durable=False)
            copied.append(out / f"{run_id}.json")
        if src.manifest is not None:  # a run kept only as Markdown (--format md)
            for run in src.manifest["runs"]:
                name = run.get("transcript")
                if name and name.endswith(".md") and (src.folder / name).is_file():
                    write_atomically(out / name, [(src.folder / name).read_bytes()],
                                     durable=False)
    return copied


def _entry_from_transcript(data: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest entry for a run of a folder written before run.json existed."""
    from glmrun.plan.ids import case_key

    case = data.get("case")
    failures = [str(e.get("reason", "")).splitlines()[0]
                for e in data.get("expectations") or [] if not e.get("passed")]
    err = data.get("error")
    repeat = data.get("repeat")
    return {
        "id": data["id"], "status": data["status"],
        "file": (data.get("source") or {}).get("file"), "conversation": data.get("name"),
        "case": case_key(case.get("vars") or {}, case["index"]) if case else None,
        "model": data.get("model"),
        "repeat": repeat.get("index", 0) + 1 if isinstance(repeat, Mapping) else None,
        "tokens": int((data.get("usage") or {}).get("total_tokens", 0)), "cost": None,
        "latency_s": round(float(data.get("duration_ms", 0.0)) / 1000, 3),
        "transcript": f"{data['id']}.json",
        "failures": failures or ([str(err.get("message", ""))] if err else []),
    }


def _merged_manifest(loaded: Sequence[_Source], out: Path) -> dict[str, Any]:
    from glmrun import __version__
    from glmrun.output.manifest import total_cost

    runs: list[dict[str, Any]] = []
    manifests = [s.manifest for s in loaded if s.manifest is not None]
    for src in loaded:
        if src.manifest is not None:
            runs += [dict(r) for r in src.manifest["runs"]]
        else:
            runs += [_entry_from_transcript(t) for t in src.transcripts.values()]
    runs.sort(key=lambda r: str(r["id"]))
    counts = dict.fromkeys(STATUSES, 0)
    for run in runs:
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    # a folder without run.json: its transcripts' own times
    timed = [*manifests, *(t for s in loaded if s.manifest is None for t in s.transcripts.values())]
    starts = [str(m["started_at"]) for m in timed if m.get("started_at")]
    ends = [str(m["finished_at"]) for m in timed if m.get("finished_at")]
    first = manifests[0] if manifests else {}
    command = list(first.get("command") or []) or None
    if command and "--shard" in command:  # the command the shards shared, whole
        at = command.index("--shard")
        del command[at:at + 2]
    settings = dict(first.get("settings") or {})
    settings["shard"] = None
    settings["models"] = list(dict.fromkeys(str(r.get("model")) for r in runs))
    commits = {json.dumps(m.get("git"), sort_keys=True) for m in manifests}
    return {
        **first,
        "format": FORMAT,
        "glmrun_version": __version__,
        "started_at": min(starts) if starts else None,
        "finished_at": max(ends) if ends else None,
        "wall_s": round(_span_s(min(starts), max(ends)), 3) if starts and ends else max(
            (float(m.get("wall_s") or 0) for m in manifests), default=0.0),
        "git": first.get("git") if len(commits) == 1 else None,  # shards of different commits
        "command": command,
        "settings": settings,
        "totals": {"runs": len(runs), "passed": counts["passed"], "failed": counts["failed"],
                   "errors": counts["error"], "not_run": counts["not_run"],
                   "tokens": sum(int(r.get("tokens") or 0) for r in runs),
                   "cost": total_cost(runs)},  # as the whole run counts it
        "interrupted": any(bool(m.get("interrupted")) for m in manifests),
        "stopped": next((m["stopped"] for m in manifests if m.get("stopped")), None),
        "runs": runs,
        "merged_from": [str(s.folder) for s in loaded],
    }


def _span_s(start: str, end: str) -> float:
    from datetime import datetime

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return max(0.0, (parse(end) - parse(start)).total_seconds())


def _summary(loaded: Sequence[_Source], manifest: Mapping[str, Any]) -> RunSummary:
    """The closing summary a whole run would have printed, from the runs' transcripts."""
    from glmrun.output.summary import RunSummary

    transcripts = {k: v for src in loaded for k, v in src.transcripts.items()}
    summary = RunSummary(total=len(manifest["runs"]), wall_s=float(manifest["wall_s"] or 0))
    for run in manifest["runs"]:
        data = transcripts.get(str(run["id"]))
        if data is None:
            summary.not_started += run["status"] == "not_run"
            continue
        _add(summary, data, run)
    summary.conversations = len(summary.tallies)  # '28 runs of 15 conversations'
    return summary


@dataclass(frozen=True)
class _Key:
    id: str
    conversation: str


def _add(summary: RunSummary, data: Mapping[str, Any], run: Mapping[str, Any]) -> None:
    """Count a run known from its transcript and manifest entry, as its run counted it."""
    from glmrun.output.summary import row_from_transcript

    run_id = str(data["id"])
    repeat = run.get("repeat")
    group = run_id.removesuffix(f"--r{repeat}") if repeat else run_id
    conversation = group  # the id without case, model and repeat: FILE[--CONV]
    if "@" in conversation and run.get("model"):  # a matrix id: FILE[--CONV][--CASE]@MODEL
        conversation = conversation.rsplit("@", 1)[0]
    if run.get("case") is not None:
        conversation = conversation.removesuffix(f"--{run['case']}")
    summary.add(row_from_transcript(data, group), _Key(run_id, conversation))
