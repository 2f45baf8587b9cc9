"""A model matrix side by side: pass rate, tokens, cost and latency per model, and the runs
where the models disagree (one passed where another did not). Read from a run's manifest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from glmrun.output.markdown import md_cell, md_code
from glmrun.output.progress import format_cost

MARKDOWN_NAME = "matrix.md"  # written next to run.json when a run has several models


@dataclass(frozen=True)
class ModelColumn:
    """One model's runs in a matrix."""

    model: str
    runs: int
    passed: int
    failed: int
    errors: int
    tokens: int
    cost: float | None
    latency_s: float  # mean per run that ran

    @property
    def pass_rate(self) -> float:
        return self.passed / self.runs if self.runs else 0.0


@dataclass(frozen=True)
class Disagreement:
    """One run (conversation × case × repeat) whose status differs between models."""

    id: str  # the run's id without its model
    statuses: Mapping[str, str]  # model → status


def columns(manifest: Mapping[str, Any]) -> list[ModelColumn]:
    """One column per model, in the order the run first met them."""
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for run in manifest.get("runs") or []:
        by_model.setdefault(str(run.get("model")), []).append(run)
    out = []
    for model, runs in by_model.items():
        ran = [r for r in runs if r.get("status") != "not_run"]
        costs = [float(r["cost"]) for r in runs if r.get("cost") is not None]
        out.append(ModelColumn(
            model=model, runs=len(runs),
            passed=sum(r.get("status") == "passed" for r in runs),
            failed=sum(r.get("status") == "failed" for r in runs),
            errors=sum(r.get("status") == "error" for r in runs),
            tokens=sum(int(r.get("tokens") or 0) for r in runs),
            cost=sum(costs) if costs else None,  # of the runs whose model has a price
            latency_s=(sum(float(r.get("latency_s") or 0) for r in ran) / len(ran)) if ran
            else 0.0,
        ))
    return out


def disagreements(manifest: Mapping[str, Any]) -> list[Disagreement]:
    """The runs that passed on some models and not on others, by id without the model."""
    lined: dict[str, dict[str, str]] = {}
    for run in manifest.get("runs") or []:
        key = run.get("id_without_model")
        if key is not None:
            lined.setdefault(str(key), {})[str(run.get("model"))] = str(run.get("status"))
    return [Disagreement(key, statuses) for key, statuses in sorted(lined.items())
            if len(statuses) > 1 and len(set(statuses.values())) > 1]


def is_matrix(manifest: Mapping[str, Any]) -> bool:
    """The run ran a model matrix (`models:` or repeated --model), not just files naming
    different models: some run's id carries its model."""
    return any(r.get("id_without_model") not in (None, r.get("id"))
               for r in manifest.get("runs") or [])


def _cells(c: ModelColumn) -> list[str]:
    return [c.model, f"{c.passed}/{c.runs} ({c.pass_rate:.0%})", str(c.failed), str(c.errors),
            str(c.tokens), "—" if c.cost is None else format_cost(c.cost), f"{c.latency_s:.2f}s"]


HEADER = ["model", "passed", "failed", "errors", "tokens", "cost", "latency/run"]


def render_text(manifest: Mapping[str, Any], limit: int = 30) -> str:
    """The matrix for a terminal: one aligned line per model, then the disagreements."""
    rows = [HEADER, *(_cells(c) for c in columns(manifest))]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    found = disagreements(manifest)
    if found:
        lines.append(f"models disagree on {len(found)} run{'s' if len(found) != 1 else ''}:")
        lines += [f"  {d.id}: " + ", ".join(f"{m} {s}" for m, s in d.statuses.items())
                  for d in found[:limit]]
        if len(found) > limit:
            lines.append(f"  … {len(found) - limit} more (see matrix.md)")
    else:
        lines.append("models agree on every run")
    return "\n".join(lines)


def render_markdown(manifest: Mapping[str, Any]) -> str:
    """The matrix as Markdown (OUT/matrix.md, or a pull-request comment)."""
    cols = columns(manifest)
    out = ["# Model matrix", "",
           "| " + " | ".join(h.capitalize() for h in HEADER) + " |",
           "| " + " | ".join("---" for _ in HEADER) + " |"]
    out += ["| " + " | ".join(md_cell(md_code(cell) if i == 0 else cell)
                              for i, cell in enumerate(_cells(c))) + " |" for c in cols]
    found = disagreements(manifest)
    out += ["", f"## Where the models disagree ({len(found)})", ""]
    if found:
        models: Sequence[str] = [c.model for c in cols]
        out += ["| Run | " + " | ".join(md_cell(md_code(m)) for m in models) + " |",
                "| --- |" + " --- |" * len(models)]
        out += ["| " + md_cell(md_code(d.id)) + " | "
                + " | ".join(d.statuses.get(m, "") for m in models) + " |" for d in found]
    else:
        out.append("Every run has the same status on every model.")
    return "\n".join(out) + "\n"
