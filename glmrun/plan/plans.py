"""Expand conversations × cases × repeats into RunPlans, rendered up front.

Everything that can be rendered before a model answers is rendered here (messages, turns,
params, expectations, local images), so `glmrun validate` and `--dry-run` catch every template
error, and the runner only sends. Variables, lowest to highest precedence: `case` (the row) and
`case_index`, the file's then the conversation's `vars`, the case row, `--var` (strings, kept as
they are). Tool `respond` specs stay unrendered: the tool runner renders them with `args`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmrun.checks.expectations import (
    RegexError,
    compile_regex,
    json_path_problem,
    schema_patterns,
)
from glmrun.errors import InputError, Problem, SpecError, TemplateError
from glmrun.load.spec import (
    MAX_RUNS,
    ConversationSpec,
    Located,
    SuiteSpec,
    discover,
    load_file,
    source_path,
    suite_roots,
)
from glmrun.load.yamlfile import display_path
from glmrun.plan import sendrules
from glmrun.plan.media import MediaError, inline_parts
from glmrun.plan.templating import Renderer, RenderError, renderer_for
from glmrun.types import MODES


@dataclass(frozen=True, slots=True)
class PlannedTurn:
    """A further user turn, rendered."""

    content: str | tuple[Mapping[str, Any], ...]
    expect: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class RenderedPlan:
    """One run of one conversation (one case, one repeat), rendered and ready to send."""

    id: str  # unique in the run, filesystem-safe: transcript file stem and --resume key
    spec: ConversationSpec
    case_index: int | None  # 0-based row of spec.cases; None without cases
    case_vars: Mapping[str, Any]
    repeat_index: int | None  # 0-based; None when repeat is 1
    variables: Mapping[str, Any]  # everything templates saw (the tool runner reuses them)
    model: str
    mode: str
    params: Mapping[str, Any]  # rendered; tools keep `respond` (see wire_params)
    messages: tuple[dict[str, Any], ...]
    turns: tuple[PlannedTurn, ...]
    expect: tuple[Mapping[str, Any], ...]  # on the final reply
    tool_responders: Mapping[str, Mapping[str, Any]]  # function name → raw `respond` spec
    group_id: str = ""  # id without the repeat suffix: pass_rate is computed per group
    source: str = ""  # the conversation file as shown to people
    base_url: str | None = None


@dataclass(frozen=True, slots=True)
class _Context:
    """What every run of one conversation shares, to render any of them again."""

    spec: ConversationSpec
    mode: str
    suite: SuiteSpec
    renderer: Renderer
    cli: Mapping[str, str]
    model_override: str | None  # --model, or this context's model of a matrix
    stem: str  # the conversation's part of every run id: what the summary table groups by


@dataclass(frozen=True, slots=True)
class RunPlan:
    """One run of one conversation (one case, one repeat), validated but kept unrendered.

    Planning renders every run once (so every template error is reported up front) and keeps
    only this small stub: a big suite's memory stays flat. `materialize()` renders the run
    again just before it is sent; the rendered fields are also readable here (each read
    renders, so the runner materializes once instead).
    """

    id: str  # unique in the run, filesystem-safe: transcript file stem and --resume key
    case_index: int | None  # 0-based row of spec.cases; None without cases
    repeat_index: int | None  # 0-based; None when repeat is 1
    context: _Context  # shared by the runs of one conversation (the stub stays small)
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
    def source(self) -> str:
        """The conversation file as shown to people."""
        return self.context.suite.display

    @property
    def base_url(self) -> str | None:
        return self.context.spec.base_url

    @property
    def variables(self) -> Mapping[str, Any]:
        """Everything templates see (the tool runner reuses them)."""
        return _variables(self.spec, self.case_index, self.case_vars, self.context.cli)

    def materialize(self) -> RenderedPlan:
        """This run, rendered (as planning rendered it)."""
        ctx = self.context
        variables = self.variables
        rendered = _render(ctx.suite, self.spec, ctx.renderer, variables, ctx.model_override)
        if isinstance(rendered, list):  # planning rendered it already: only a changed file
            raise PlanError(_failure_problems(
                {(*key, reason, self.spec.name): [self.case_index] for key, reason in rendered}
            ))
        return RenderedPlan(
            id=self.id, spec=self.spec, case_index=self.case_index, case_vars=self.case_vars,
            repeat_index=self.repeat_index, variables=variables, mode=self.mode,
            group_id=self.group_id, source=self.source, base_url=self.base_url, **rendered,
        )

    @property
    def model(self) -> str:
        return self.materialize().model

    @property
    def params(self) -> Mapping[str, Any]:
        return self.materialize().params

    @property
    def messages(self) -> tuple[dict[str, Any], ...]:
        return self.materialize().messages

    @property
    def turns(self) -> tuple[PlannedTurn, ...]:
        return self.materialize().turns

    @property
    def expect(self) -> tuple[Mapping[str, Any], ...]:
        return self.materialize().expect

    @property
    def tool_responders(self) -> Mapping[str, Mapping[str, Any]]:
        return self.materialize().tool_responders


def _variables(
    conv: ConversationSpec, case_index: int | None, row: Mapping[str, Any],
    cli: Mapping[str, str],
) -> dict[str, Any]:
    # rows are never mutated: share them rather than copy (memory on big suites)
    return {"case": row, "case_index": case_index, **conv.vars, **row, **cli}


class PlanError(SpecError, TemplateError):
    """Templates (or local images) failed while planning; carries every Problem."""


def wire_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Params as sent: tools without glmrun's `respond`, `extra_body` keys lifted to the top,
    temperature / top_p as Zhipu takes them (glmrun.plan.sendrules)."""
    out = {k: v for k, v in params.items() if k != "extra_body"}
    if "tools" in out:
        out["tools"] = [{k: v for k, v in tool.items() if k != "respond"} for tool in out["tools"]]
    out.update(params.get("extra_body") or {})
    return sendrules.sampling(out)


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
    """Every run of every conversation, rendered; raises PlanError listing every failure.

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
    for suite in suites:
        renderer = renderer_for(suite.file.parent)
        key = file_key(suite.file, (roots or {}).get(suite.file))
        for conv in suite.conversations:
            stem = conversation_key(key, suite.file, conv.name)
            matrix, in_id = _models_of(conv, models)
            contexts = {
                model: _Context(conv, mode_override or conv.mode, suite, renderer, cli,
                                model, stem)
                for model in matrix
            }
            case_keys = _case_keys(suite, conv, failures)
            rows: list[tuple[int | None, Mapping[str, Any]]] = (
                list(enumerate(conv.cases)) if conv.cases else [(None, {})]
            )
            if repeat is not None:
                conv = dataclasses.replace(conv, repeat=repeat)
                contexts = {m: dataclasses.replace(c, spec=conv) for m, c in contexts.items()}
            repeats = [None] if conv.repeat == 1 else list(range(conv.repeat))
            for case_index, row in rows:
                key_of_case = None if case_index is None else case_keys[case_index]
                if key_of_case == "":
                    continue  # a duplicate case id: reported
                chosen = [
                    (run_id(stem, key_of_case, model if in_id else None, r), r, model)
                    for model in matrix for r in repeats
                ]
                if name_filter:
                    chosen = [c for c in chosen if _matches(name_filter, conv.name, c[0])]
                if only_ids is not None:
                    chosen = [c for c in chosen if c[0] in only_ids]
                if not chosen:
                    continue
                variables = _variables(conv, case_index, row, cli)
                rendered = _render(suite, conv, renderer, variables, chosen[0][2])
                if isinstance(rendered, list):
                    for where, reason in rendered:
                        failures.setdefault((*where, reason, conv.name), []).append(case_index)
                    continue
                for plan_id, repeat_index, model in chosen:
                    if plan_id in owners:
                        raise InputError(_clash(plan_id, owners[plan_id], suite.display))
                    if plan_id == RESERVED_ID:
                        raise InputError(f"{suite.display}: the run id '{plan_id}' is taken by "
                                         "the run's manifest (run.json): rename the file")
                    owners[plan_id] = suite.display
                    plans.append(RunPlan(
                        id=plan_id, case_index=case_index, repeat_index=repeat_index,
                        context=contexts[model],
                        group_id=run_id(stem, key_of_case, model if in_id else None, None),
                    ))
                if len(plans) > MAX_RUNS:
                    at = conv.at or Located(suite.display)
                    raise PlanError([Problem(
                        at.file, at.line, at.column, "",
                        f"more than {MAX_RUNS} runs in one run: split the suite or use --filter",
                    )])
    if failures:
        raise PlanError(_failure_problems(failures))
    return plans if limit is None else plans[:limit]


def validate_paths(
    paths: Iterable[str | os.PathLike[str]], cli_vars: Mapping[str, str] | None = None,
    hints: list[str] | None = None,
) -> list[Problem]:
    """Every problem in the files under `paths` (schema, cases, templates, images); no raising.

    `hints` receives the warnings (glmrun.plan.hints)."""
    problems: list[Problem] = []
    files: list[Path] = []
    paths_list = list(paths)
    for given in paths_list:
        try:
            found = discover([given])
        except InputError as exc:
            problems.append(Problem(str(given), None, None, "", str(exc).split(": ", 1)[-1]))
            continue
        if not found:
            problems.append(Problem(str(given), None, None, "", "no .yaml or .yml files found"))
        files.extend(found)
    suites: list[SuiteSpec] = []
    for file in dict.fromkeys(files):
        try:
            suites.append(load_file(file))
        except SpecError as exc:
            problems.extend(exc.problems)
    if hints is not None:
        from glmrun.plan.hints import model_hints

        hints.extend(model_hints(suites))
    try:
        roots = suite_roots([p for p in paths_list if Path(p).exists()])
        plan_runs(suites, cli_vars=cli_vars, roots=roots)
    except SpecError as exc:
        problems.extend(exc.problems)
    except InputError as exc:  # two runs sharing an id
        problems.append(Problem(suites[0].display if suites else "", None, None, "", str(exc)))
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0))


# -- rendering ------------------------------------------------------------------------------

_Failure = tuple[tuple[str, int | None, int | None, str], str]


def _render(
    suite: SuiteSpec,
    conv: ConversationSpec,
    renderer: Renderer,
    variables: Mapping[str, Any],
    model_override: str | None,
) -> dict[str, Any] | list[_Failure]:
    """The rendered fields of a RunPlan, or every failure as (location, reason)."""
    failures: list[_Failure] = []
    root = conv.file.parent

    def render(value: Any, path: tuple[Any, ...]) -> Any:
        try:
            return renderer.render_value(value, variables, path)
        except RenderError as exc:
            failures.append((_locate(suite, conv, exc.path), exc.reason))
            return value

    def content(value: Any, path: tuple[Any, ...]) -> Any:
        def failed(exc: MediaError) -> None:  # every image of the content, not only the first
            failures.append((_locate(suite, conv, (*path, *exc.path)), exc.reason))

        return inline_parts(render(value, path), root=root, model=model, on_error=failed)

    model = model_override or render(conv.model, ("model",))

    tools = conv.params.get("tools") or []
    params = dict(conv.params)
    if tools:
        params["tools"] = [{k: v for k, v in t.items() if k != "respond"} for t in tools]
    params = render(params, ("params",))
    responders: dict[str, Mapping[str, Any]] = {}
    for i, tool in enumerate(tools):
        if "respond" in tool:
            params["tools"][i]["respond"] = tool["respond"]
            responders[tool["function"]["name"]] = tool["respond"]

    messages = []
    for i, message in enumerate(conv.messages):
        out = render({k: v for k, v in message.items() if k != "content"}, ("messages", i))
        if "content" in message:
            out["content"] = content(message["content"], ("messages", i, "content"))
        for call in out.get("tool_calls", []):
            if not isinstance(call["function"]["arguments"], str):
                call["function"]["arguments"] = json.dumps(
                    call["function"]["arguments"], ensure_ascii=False
                )
        messages.append(out)

    turns = []
    for i, turn in enumerate(conv.turns):
        text = content(list(turn.content) if isinstance(turn.content, tuple) else turn.content,
                       ("turns", i, "content"))
        turns.append(PlannedTurn(
            text if isinstance(text, str) else tuple(text),
            _expectations(turn.expect, ("turns", i, "expect"), render, suite, conv, failures),
        ))
    expect = _expectations(conv.expect, ("expect",), render, suite, conv, failures)
    if failures:
        return failures
    return {
        "model": model, "params": params, "messages": tuple(messages), "turns": tuple(turns),
        "expect": expect, "tool_responders": responders,
    }


def _expectations(
    items: Sequence[Mapping[str, Any]],
    path: tuple[Any, ...],
    render: Any,
    suite: SuiteSpec,
    conv: ConversationSpec,
    failures: list[_Failure],
) -> tuple[Mapping[str, Any], ...]:
    """Rendered expectations, with the checks only a rendered value allows (regex, schema)."""
    out = []
    for j, item in enumerate(items):
        rendered = render(item, (*path, j))
        reason = _expectation_problem(rendered)
        if reason is not None:
            key = next(k for k in ("regex", "json_schema", "json_path") if k in rendered)
            failures.append((_locate(suite, conv, (*path, j, key)), reason))
        out.append(rendered)
    return tuple(out)


def _expectation_problem(item: Mapping[str, Any]) -> str | None:
    if isinstance(item.get("json_path"), str):
        return json_path_problem(item["json_path"])
    if "regex" in item:
        try:
            compile_regex(item["regex"], item.get("flags", ""))
        except RegexError as exc:
            return f"invalid regular expression: {exc}"
    if "json_schema" in item:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(item["json_schema"])
        except SchemaError as exc:
            return f"invalid JSON Schema: {exc.message}"
        for pattern in schema_patterns(item["json_schema"]):
            try:
                compile_regex(pattern)
            except RegexError as exc:
                return f"invalid JSON Schema: pattern {pattern!r}: {exc}"
    return None


def _locate(
    suite: SuiteSpec, conv: ConversationSpec, path: tuple[Any, ...]
) -> tuple[str, int | None, int | None, str]:
    """(file, line, column, readable path) of a path in the merged conversation."""
    src = source_path(conv, path)
    source = suite.positions
    if source is None:
        return suite.display, None, None, display_path(src)
    while src and src not in source.values:
        src = src[:-1]  # e.g. a turn written as a bare string has no `content` key
    line, column = source.where(src) or (None, None)
    return suite.display, line, column, display_path(src)


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


# -- ids ------------------------------------------------------------------------------------

RESERVED_ID = "run"  # OUT/run.json is the manifest
_UNSAFE = re.compile(r'[\\/:*?"<>|\s\x00-\x1f]+')


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).lstrip(".") or "_"


def file_key(file: Path, root: Path | None = None) -> str:
    """The file's part of its run ids: its path below the suite folder, without the suffix.

    `root` is the folder given on the command line (default: the file's own folder); folders
    are joined with `__`, so `glmrun convos/` names `convos/billing/refund.yaml`
    `billing__refund`.
    """
    try:
        relative = file.relative_to(root) if root is not None else Path(file.name)
    except ValueError:
        relative = Path(file.name)
    return "__".join(_safe(part) for part in relative.with_suffix("").parts)


def conversation_key(key: str, file: Path, name: str) -> str:
    """The conversation's part of its run ids: the file's, then `--name` unless it is the stem."""
    return key if name == file.stem else f"{key}--{_safe(name)}"


def run_id(stem: str, case: str | None, model: str | None, repeat_index: int | None) -> str:
    """`stem[--case][@model][--rN]`: each part depends on this run alone, never its siblings.

    One longer than MAX_ID_BYTES is shortened (see `_bounded`).
    """
    out = stem
    if case is not None:
        out += f"--{case}"
    if model is not None:
        out += f"@{_safe(model)}"
    if repeat_index is not None:
        out += f"--r{repeat_index + 1}"
    return _bounded(out)


def case_key(row: Mapping[str, Any], index: int) -> str:
    """A case's part of its run ids: its `id` column or field, else `caseN` (its 1-based row)."""
    value = row.get("id")
    if value is None or value == "":
        return f"case{index + 1}"
    return _safe(str(value))


def _case_keys(
    suite: SuiteSpec, conv: ConversationSpec, failures: dict[tuple[Any, ...], list[int | None]]
) -> list[str]:
    keys = [case_key(row, i) for i, row in enumerate(conv.cases)]
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in first:
            where = _locate(suite, conv, ("cases",))
            reason = (f"case id '{key}' of row {i + 1} is already row {first[key] + 1}'s: "
                      "case ids must be unique")
            failures.setdefault((*where, reason, conv.name), []).append(i)
            keys[i] = ""
        first.setdefault(key, i)
    return keys


def _models_of(conv: ConversationSpec, cli: tuple[str, ...]) -> tuple[list[str | None], bool]:
    """The models a conversation runs on, and whether its run ids carry the model.

    A `models:` list or two or more `--model` make a matrix (ids carry the model, so adding a
    model renames nothing); one `--model` overrides the model of a conversation without
    `models:`, keeping its ids.
    """
    if len(cli) > 1:
        return list(cli), True
    if conv.models:
        return (list(cli) if cli else list(conv.models)), True
    return ([cli[0]] if cli else [None]), False


def _clash(plan_id: str, first: str, second: str) -> str:
    if first == second:
        return (f"two runs of {first} would share the id '{plan_id}': their names differ only "
                "in characters a file name cannot hold; rename one")
    return (f"two runs would share the id '{plan_id}' ({first} and {second}): rename one, or "
            "run the folder above both so that their ids carry their folders")


MAX_ID_BYTES = 200  # + '.json' and the writer's '.<name>.<pid>-<n>.tmp' stay within 255


def _bounded(run_id: str) -> str:
    """An id short enough for a file name: a long one keeps its start plus a hash of the whole.

    The hash depends on the full id alone, so it is the same from run to run (--resume finds
    it) and two long ids stay distinct.
    """
    raw = run_id.encode("utf-8")
    if len(raw) <= MAX_ID_BYTES:
        return run_id
    digest = hashlib.sha256(raw).hexdigest()[:12]
    head = raw[: MAX_ID_BYTES - len(digest) - 1].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def _matches(pattern: str, name: str, run_id: str) -> bool:
    return any(pattern in s or fnmatch.fnmatchcase(s, pattern) for s in (name, run_id))
