"""Expand conversations × cases × repeats × models into RunPlans, each rendered once.

Planning renders every case row once, up front (glmrun.plan.render), so `glmrun validate`
and `--dry-run` catch every template error before anything is sent, and keeps what it
rendered in the plan: the runner, the batch collector and `--dry-run` send it as it is, never
rendering again. Variables, lowest to highest precedence: `case` (the row) and `case_index`,
the file's then the conversation's `vars`, the case row, `--var` (strings, kept as they are).
Tool `respond` specs stay unrendered: the tool runner renders them with `args`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmrun.errors import InputError, PlanError, Problem
from glmrun.load.spec import (
    MAX_RUNS,
    ConversationSpec,
    Located,
    SuiteSpec,
)
from glmrun.plan.ids import (
    RESERVED_ID,
    case_keys,
    clash,
    conversation_key,
    file_key,
    matches,
    models_of,
    run_id,
)
from glmrun.plan.render import RenderedRun, ToolPlan, locate, render_run
from glmrun.plan.templating import renderer_for
from glmrun.types import MODES, CallMode, ChatRequest


@dataclass(frozen=True, slots=True)
class _Context:
    """What every run of one conversation shares."""

    spec: ConversationSpec
    mode: str
    suite: SuiteSpec
    tools: ToolPlan
    cli: Mapping[str, str]
    model_override: str | None  # --model, or this context's model of a matrix
    stem: str  # the conversation's part of every run id: what the summary table groups by


@dataclass(frozen=True, slots=True)
class RunPlan:
    """One run of one conversation (one case, one repeat, one model), rendered.

    `rendered` is its case row's, shared with that row's other repeats and models; parts
    equal for every row are shared by all of them (glmrun.plan.render).
    """

    id: str  # unique in the run, filesystem-safe: transcript file stem and --resume key
    case_index: int | None  # 0-based row of spec.cases; None without cases
    repeat_index: int | None  # 0-based; None when repeat is 1
    context: _Context  # shared by the runs of one conversation (the plan stays small)
    rendered: RenderedRun
    group_id: str = ""  # id without the repeat suffix: pass_rate is computed per group

    @property
    def spec(self) -> ConversationSpec:
        return self.context.spec

    @property
    def conversation(self) -> str:
        """Which conversation this is a run of: the id without its case and repeat."""
        return self.context.stem

    @property
    def case_vars(self) -> Mapping[str, Any]:
        return {} if self.case_index is None else self.context.spec.cases[self.case_index]

    @property
    def mode(self) -> str:
        return self.context.mode

    @property
    def model(self) -> str:
        model = self.context.model_override or self.rendered.model
        assert model is not None  # rendered whenever nothing overrides it
        return model

    @property
    def source(self) -> str:
        """The conversation file as shown to people."""
        return self.context.suite.display

    @property
    def base_url(self) -> str | None:
        return self.context.spec.base_url

    @property
    def tool_responders(self) -> Mapping[str, Mapping[str, Any]]:
        """Function name → its raw `respond` spec."""
        return self.context.tools.responders

    @property
    def extractors(self) -> frozenset[str]:
        """Functions declared without `respond:` (a tool as a JSON schema)."""
        return self.context.tools.extractors

    @property
    def variables(self) -> Mapping[str, Any]:
        """Everything templates saw (the tool runner and checks reuse them)."""
        return _variables(self.spec, self.case_index, self.case_vars, self.context.cli)

    def request(self, messages: Sequence[Mapping[str, Any]]) -> ChatRequest:
        """The request this run sends with `messages` as its history: the one place every
        mode and --dry-run build theirs. A batch line is a sync call's body."""
        mode: CallMode = "sync" if self.mode == "batch" else self.mode  # type: ignore[assignment]
        return ChatRequest(model=self.model, messages=tuple(messages),
                           params=self.rendered.params, mode=mode)


def _variables(
    conv: ConversationSpec, case_index: int | None, row: Mapping[str, Any],
    cli: Mapping[str, str],
) -> dict[str, Any]:
    # rows are never mutated: share them rather than copy (memory on big suites)
    return {"case": row, "case_index": case_index, **conv.vars, **row, **cli}


def plan_runs(
    suites: Sequence[SuiteSpec],
    *,
    cli_vars: Mapping[str, str] | None = None,
    mode_override: str | None = None,
    model_override: str | None = None,
    models: Sequence[str] = (),
    name_filter: str | None = None,
    roots: Mapping[Path, Path] | None = None,
    limit: int | None = None,
    repeat: int | None = None,
    only_ids: frozenset[str] | None = None,
) -> list[RunPlan]:
    """Every run of every conversation, each case row rendered once; raises PlanError listing
    every failure.

    `models` (two or more `--model`) runs every conversation on each; `roots` maps a file to
    the suite folder its id is relative to (default: its own folder); see `run_id`. `repeat`
    overrides every conversation's; `only_ids` (`--last-failed`) and `name_filter` select
    runs; `limit` keeps the first N of those.
    """
    if mode_override is not None and mode_override not in MODES:
        raise InputError(f"mode '{mode_override}' is not one of {list(MODES)}")
    if model_override is not None:
        models = (*models, model_override)
    models = tuple(dict.fromkeys(models))
    cli = dict(cli_vars or {})
    plans: list[RunPlan] = []
    failures: dict[tuple[Any, ...], list[int | None]] = {}
    owners: dict[str, str] = {}  # run id → the file that gave it first
    clashes: list[Problem] = []  # runs whose id another run (or the manifest) has
    for suite in suites:
        renderer = renderer_for(suite.file.parent)
        key = file_key(suite.file, (roots or {}).get(suite.file))
        for conv in suite.conversations:
            stem = conversation_key(key, suite.file, conv.name)
            matrix, in_id = models_of(conv, models)
            tools = ToolPlan.of(conv)
            contexts = {
                model: _Context(conv, mode_override or conv.mode, suite, tools, cli, model, stem)
                for model in matrix
            }
            keys, duplicates = case_keys(conv.cases)
            for row_index, reason in duplicates:
                where = locate(suite, conv, ("cases",))
                failures.setdefault((*where, reason, conv.name), []).append(row_index)
            first: RenderedRun | None = None  # the row whose objects later rows share
            rows: list[tuple[int | None, Mapping[str, Any]]] = (
                list(enumerate(conv.cases)) if conv.cases else [(None, {})]
            )
            if repeat is not None:
                conv = dataclasses.replace(conv, repeat=repeat)
                contexts = {m: dataclasses.replace(c, spec=conv) for m, c in contexts.items()}
            repeats = [None] if conv.repeat == 1 else list(range(conv.repeat))
            for case_index, row in rows:
                key_of_case = None if case_index is None else keys[case_index]
                if key_of_case == "":
                    continue  # a duplicate case id: reported
                chosen = [
                    (run_id(stem, key_of_case, model if in_id else None, r), r, model)
                    for model in matrix for r in repeats
                ]
                if name_filter:
                    chosen = [c for c in chosen if matches(name_filter, conv.name, c[0])]
                if only_ids is not None:
                    chosen = [c for c in chosen if c[0] in only_ids]
                if not chosen:
                    continue
                variables = _variables(conv, case_index, row, cli)
                overrides = tuple(dict.fromkeys(m for _, _, m in chosen if m is not None))
                rendered = render_run(suite, conv, tools, renderer, variables,
                                      models=overrides, like=first)
                if isinstance(rendered, list):
                    for where, reason in rendered:
                        failures.setdefault((*where, reason, conv.name), []).append(case_index)
                    continue
                first = first or rendered
                for plan_id, repeat_index, model in chosen:
                    at = conv.at or Located(suite.display)
                    if plan_id in owners or plan_id == RESERVED_ID:
                        if any((p.file, p.line, p.column) == (at.file, at.line, at.column)
                               for p in clashes):
                            continue  # one per conversation, not one per case
                        clashes.append(Problem(at.file, at.line, at.column, "", (
                            clash(plan_id, owners[plan_id], suite.display)
                            if plan_id in owners else
                            f"the run id '{plan_id}' is taken by the run's manifest "
                            "(run.json): rename the file")))
                        continue
                    owners[plan_id] = suite.display
                    plans.append(RunPlan(
                        id=plan_id, case_index=case_index, repeat_index=repeat_index,
                        context=contexts[model], rendered=rendered,
                        group_id=plan_id if repeat_index is None else
                        run_id(stem, key_of_case, model if in_id else None, None),
                    ))
                if len(plans) > MAX_RUNS:
                    at = conv.at or Located(suite.display)
                    raise PlanError([Problem(
                        at.file, at.line, at.column, "",
                        f"more than {MAX_RUNS} runs in one run: split the suite or use --filter",
                    )])
    if failures or clashes:
        raise PlanError(_failure_problems(failures) + clashes)
    return plans if limit is None else plans[:limit]


def _failure_problems(failures: Mapping[tuple[Any, ...], list[int | None]]) -> list[Problem]:
    problems = []
    for (file, line, column, path, reason, name), cases in failures.items():
        where = f"conversation '{name}'"
        numbered = [c + 1 for c in cases if c is not None]
        if len(numbered) == 1:
            where += f", case {numbered[0]}"
        elif 1 < len(numbered) <= 5:
            where += ", cases " + ", ".join(map(str, numbered))
        elif numbered:
            where += f", {len(numbered)} cases"
        problems.append(Problem(file, line, column, path, f"{reason} ({where})"))
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0))
