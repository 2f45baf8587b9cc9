"""Files → RunPlans, or every problem of every stage of every file at once.

Loading reports the YAML, schema, cases-file and name problems of each file and keeps what of
it still loads (glmrun.load.partial); planning then renders that part too (templates, media,
expectations, run ids), so one `glmrun validate` or `glmrun run` lists everything to fix.
`run` and `validate` both come here, so they report the same problems.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from glmrun.errors import InputError, Problem, SpecError
from glmrun.load.spec import check_file, discover, suite_roots
from glmrun.plan.plans import RunPlan, plan_runs


def plan_files(files: Sequence[Path], *, hints: list[str] | None = None,
               hint_overrides: Sequence[str] = (), **options: Any) -> list[RunPlan]:
    """Every run of every conversation of `files` (options: those of `plan_runs`); raises
    SpecError listing every problem of every file. `hints` receives the warnings
    (glmrun.plan.hints) about the files' models, or `hint_overrides` (--model) if given."""
    checked = [check_file(f) for f in dict.fromkeys(files)]
    if hints is not None:
        from glmrun.plan.hints import model_hints

        suites = [] if hint_overrides else [c.suite for c in checked if c.suite is not None]
        hints.extend(model_hints(suites, hint_overrides))
    problems = [p for c in checked for p in c.problems]
    renamed = {c.suite.display: c.renamed for c in checked if c.suite is not None}
    try:
        plans = plan_runs([c.suite for c in checked if c.suite is not None], **options)
    except SpecError as exc:
        problems += [_in_file(p, renamed.get(p.file, {})) for p in exc.problems]
    if problems:
        raise SpecError(sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0)))
    return plans


def validate_paths(
    paths: Iterable[str | os.PathLike[str]], cli_vars: Mapping[str, str] | None = None,
    hints: list[str] | None = None,
) -> list[Problem]:
    """Every problem in the files under `paths`, as `plan_files` finds them; no raising.
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
    try:
        roots = suite_roots([p for p in paths_list if Path(p).exists()])
        plan_files(files, hints=hints, cli_vars=cli_vars, roots=roots)
    except SpecError as exc:
        problems.extend(exc.problems)
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0))


def _in_file(problem: Problem, renamed: Mapping[str, str]) -> Problem:
    """A planning problem of a file's valid part, with its path named as in the file."""
    return dataclasses.replace(problem, path=renamed.get(problem.path, problem.path))
