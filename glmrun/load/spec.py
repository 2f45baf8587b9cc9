"""Conversation files → validated, typed specs (with source positions for every error).

The dataclasses below are the contract between loading (this module, `templating`, `plan`)
and running (`runner`). Loading: `load_file(path) -> SuiteSpec` raises `SpecError` with every
problem at once; `discover(paths)` expands folders. The JSON Schema (`glmrun.load.schema`)
is the only structural validator; the checks here are the ones a schema cannot express
(duplicate names, cases files: `glmrun.load.cases`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glmrun.errors import (
    InputError,
    Problem,
    SpecError,
    YamlLoadError,
    display_path,
)
from glmrun.load.cases import read_cases_file
from glmrun.load.partial import valid_part
from glmrun.load.schema import schema_problems, schema_validator
from glmrun.load.yamlfile import LoadedYaml, SourceMap, json_type, load_yaml, load_yaml_file


@dataclass(frozen=True)
class Located:
    """Where a value came from: for errors that name file:line:column."""

    file: str
    line: int | None = None
    column: int | None = None


@dataclass(frozen=True)
class TurnSpec:
    """A further user turn: its (untemplated) content and the expectations on the reply."""

    content: str | tuple[Mapping[str, Any], ...]
    expect: tuple[Mapping[str, Any], ...] = ()
    at: Located | None = None


@dataclass(frozen=True)
class ConversationSpec:
    """One conversation, with file-level settings already merged in (nothing templated yet)."""

    name: str
    file: Path  # absolute path of the conversation file
    file_sha256: str
    model: str  # the first of `models` when only those are set
    mode: str  # one of glmrun.types.MODES
    description: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # may hold params.tools with `respond`
    vars: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[Mapping[str, Any], ...] = ()  # raw message mappings (role, content, ...)
    turns: tuple[TurnSpec, ...] = ()
    cases: tuple[Mapping[str, Any], ...] = ()  # resolved rows (inline or from a data file)
    expect: tuple[Mapping[str, Any], ...] = ()  # on the final reply of the conversation
    base_url: str | None = None
    repeat: int = 1
    pass_rate: float = 1.0
    max_tool_rounds: int = 8
    tags: tuple[str, ...] = ()
    at: Located | None = None
    # merged path → where it came from in the file, e.g. ("expect", 2) → ("conversations", 1,
    # "expect", 0); see source_path()
    origins: Mapping[tuple[Any, ...], tuple[Any, ...]] = field(default_factory=dict)
    models: tuple[str, ...] = ()  # a model matrix: every run on each (run ids carry the model)


@dataclass(frozen=True)
class SuiteSpec:
    """Everything one file declares."""

    file: Path
    sha256: str
    conversations: tuple[ConversationSpec, ...]
    source: SourceMap | None = None  # positions of every key and value in the file
    display: str = ""  # the file's name as shown in messages
    text: str | None = None  # the file's text, to rebuild `source` when it was let go

    @functools.cached_property
    def positions(self) -> SourceMap | None:
        """The positions in the file; re-parsed (once) from `text` when the suite let them go.

        A big suite's map (a position for every value of every case row) costs more memory
        than its data, and only errors need it, so loading keeps the text instead.
        """
        if self.source is None and self.text is not None:
            return load_yaml(self.text, self.display).source
        return self.source


YAML_SUFFIXES = (".yaml", ".yml")
MAX_RUNS = 100_000  # runs (cases × repeat) of one conversation, and of one whole run



def display_name(path: Path) -> str:
    """The path as people should see it in messages: relative to the working folder if inside."""
    try:
        return path.absolute().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def discover(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given plus *.yaml/*.yml under folders (skipping names starting with _ or .)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            unreadable: list[OSError] = []
            for folder, dirs, files in os.walk(path, onerror=unreadable.append):
                dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
                found.extend(
                    Path(folder) / f
                    for f in files
                    if f.endswith(YAML_SUFFIXES) and not f.startswith(("_", "."))
                )
            if unreadable:  # skipping a folder silently would drop its conversations
                error = unreadable[0]
                folder = display_name(Path(error.filename)) if error.filename else str(given)
                raise InputError(f"{given}: cannot read folder {folder}: {error.strerror}")
        elif path.exists():
            found.append(path)
        else:
            raise InputError(f"{given}: no such file or directory")
    return sorted(dict.fromkeys(found))


def suite_roots(paths: Iterable[str | os.PathLike[str]]) -> dict[Path, Path]:
    """Each file under `paths` (absolute) → the folder its run ids are relative to: the folder
    given on the command line, or a file's own folder when the file was given."""
    roots: dict[Path, Path] = {}
    for given in paths:
        folder = Path(given).absolute() if Path(given).is_dir() else None
        for file in discover([given]):
            roots.setdefault(file.absolute(), folder or file.absolute().parent)
    return roots


def load_file(path: Path) -> SuiteSpec:
    """Load, validate and merge one conversation file; raises SpecError with every problem.

    The first load leaves the positions inside `cases` rows out (most of a big suite's source
    map, and only error messages need them); when anything is wrong, the file is loaded again
    with every position, so the problems say exactly where they are.
    """
    try:
        return _load_file(path, without_case_rows=True)
    except SpecError:
        return _load_file(path, without_case_rows=False)


def _load_file(path: Path, *, without_case_rows: bool) -> SuiteSpec:
    display = display_name(path)
    raw, doc, data = _document(path, display, without_case_rows=without_case_rows)
    problems = list(doc.problems)
    problems.extend(schema_problems(data, doc.source, display))
    if len(problems) > len(doc.problems):
        raise SpecError(_sorted(problems))
    suite = _build(path, hashlib.sha256(raw).hexdigest(), data, doc.source, display, problems)
    if problems:
        raise SpecError(_sorted(problems))
    return dataclasses.replace(suite, source=None, text=raw.decode("utf-8-sig"))


def _document(path: Path, display: str, *,
              without_case_rows: bool) -> tuple[bytes, LoadedYaml, dict[str, Any]]:
    """The file's bytes, its parsed document and top-level mapping; SpecError if it has none."""
    try:
        raw, doc = load_yaml_file(path, display, without_case_rows=without_case_rows)
    except YamlLoadError as exc:
        raise SpecError([exc.problem]) from None
    data = doc.data
    if data is None:
        raise SpecError([*doc.problems, Problem(display, 1, 1, "", "the file is empty")])
    if not isinstance(data, dict):
        line, column = doc.source.where(()) or (1, 1)
        reason = ("the top level must be an object (name, model, messages, ...), not "
                  f"{json_type(data, article=True)}")
        raise SpecError([Problem(display, line, column, "", reason)])
    return raw, doc, data


@dataclass(frozen=True)
class CheckedFile:
    """One file's loading problems, and what of it the later stages can still check."""

    problems: list[Problem]
    suite: SuiteSpec | None  # its conversations free of loading problems (None: not one)
    renamed: Mapping[str, str] = field(default_factory=dict)  # suite's paths → the file's


def check_file(path: Path) -> CheckedFile:
    """Every problem of loading one file (YAML, schema, cases files, names), and the part of it
    that loaded (see glmrun.load.partial), for planning to check the rest."""
    try:
        return CheckedFile([], _load_file(path, without_case_rows=True))
    except SpecError:
        pass  # read again with every position (as load_file does), and check what loads
    display = display_name(path)
    try:
        raw, doc, data = _document(path, display, without_case_rows=False)
    except SpecError as exc:
        return CheckedFile(exc.problems, None)
    problems = [*doc.problems, *schema_problems(data, doc.source, display)]
    part = valid_part(data, doc.source, schema_validator())
    if part is None:
        return CheckedFile(_sorted(problems), None)
    later: list[Problem] = []
    unsound: set[int] = set()
    suite = _build(path, hashlib.sha256(raw).hexdigest(), part.data, part.source, display, later,
                   unsound)
    sound = tuple(c for i, c in enumerate(suite.conversations) if i not in unsound)
    problems += [dataclasses.replace(p, path=part.renamed.get(p.path, p.path)) for p in later]
    return CheckedFile(_sorted(problems),
                       dataclasses.replace(suite, conversations=sound) if sound else None,
                       part.renamed)


def source_path(spec: ConversationSpec, path: tuple[Any, ...]) -> tuple[Any, ...]:
    """Where in the file a path of the merged conversation came from (its longest known prefix)."""
    for end in range(len(path), 0, -1):
        origin = spec.origins.get(path[:end])
        if origin is not None:
            return (*origin, *path[end:])
    return path


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0))


def _build(
    path: Path,
    sha256: str,
    data: dict[str, Any],
    source: SourceMap,
    display: str,
    problems: list[Problem],
    unsound: set[int] | None = None,
) -> SuiteSpec:
    """Merge file-level settings into each conversation (data is schema-valid); the index of
    each conversation a problem is about goes in `unsound`."""
    unsound = set() if unsound is None else unsound
    items: list[tuple[tuple[Any, ...], dict[str, Any]]]
    if "conversations" in data:
        items = [(("conversations", i), c) for i, c in enumerate(data["conversations"])]
    else:
        items = [((), {})]
    seen: dict[str, int] = {}
    for n, (prefix, conv) in enumerate(items):
        if prefix and conv["name"] in seen:
            unsound.add(n)
            pos = source.where((*prefix, "name")) or (None, None)
            problems.append(Problem(
                display, pos[0], pos[1], display_path((*prefix, "name")),
                f"duplicate conversation name '{conv['name']}' "
                f"(first at line {seen[conv['name']]})",
            ))
        elif prefix:
            seen[conv["name"]] = (source.where((*prefix, "name")) or (0, 0))[0]

    cases_cache: dict[Path, tuple[Mapping[str, Any], ...] | str] = {}
    absolute = path.absolute()
    conversations = []
    for n, (prefix, conv) in enumerate(items):
        before = len(problems)
        merge = _Merge(data, conv, prefix)
        cases_value = merge.pick("cases")
        cases: tuple[Mapping[str, Any], ...] = ()
        if isinstance(cases_value, list):
            cases = tuple(cases_value)
        elif isinstance(cases_value, str):
            rows = read_cases_file(absolute.parent, cases_value, cases_cache)
            if isinstance(rows, str):
                cases_at = merge.origins[("cases",)]
                pos = source.where(cases_at, key=True) or (None, None)
                problems.append(Problem(display, pos[0], pos[1], display_path(cases_at), rows))
            else:
                cases = rows
        turn_items = merge.pick("turns", [])
        turns_at = merge.origins.get(("turns",), ("turns",))
        turns = []
        for i, turn in enumerate(turn_items):
            line, column = source.where((*turns_at, i)) or (None, None)
            at = Located(display, line, column)
            if isinstance(turn, str):
                turns.append(TurnSpec(turn, (), at))
            else:
                content = turn["content"]
                turns.append(TurnSpec(
                    content if isinstance(content, str) else tuple(content),
                    tuple(turn.get("expect", ())), at,
                ))
        model, models = merge.models()
        repeat = merge.pick("repeat", 1)
        runs = max(len(cases), 1) * repeat * max(len(models), 1)
        if runs > MAX_RUNS:
            where = merge.origins.get(("repeat",)) or merge.origins.get(("cases",)) or prefix
            pos = source.where(where) or (None, None)
            shape = f"{max(len(cases), 1)} cases × repeat {repeat}"
            shape += f" × {len(models)} models" if models else ""
            problems.append(Problem(display, pos[0], pos[1], display_path(where),
                                    f"{shape} is more than {MAX_RUNS} runs"))
        params = merge.mapping("params")
        _check_tools(params, merge.origins, source, display, problems)
        line, column = source.where(prefix) or (1, 1)
        conversations.append(ConversationSpec(
            name=conv["name"] if prefix else data.get("name", path.stem),
            file=absolute,
            file_sha256=sha256,
            model=model,
            mode=merge.pick("mode", "sync"),
            description=merge.pick("description"),
            params=params,
            vars=merge.mapping("vars"),
            messages=tuple(merge.pick("messages", [])),
            turns=tuple(turns),
            cases=cases,
            expect=merge.expect(),
            base_url=merge.pick("base_url"),
            repeat=repeat,
            pass_rate=merge.pick("pass_rate", 1.0),
            max_tool_rounds=merge.pick("max_tool_rounds", 8),
            tags=merge.tags(),
            at=Located(display, line, column),
            origins=merge.origins,
            models=models,
        ))
        if len(problems) > before:
            unsound.add(n)
    return SuiteSpec(absolute, sha256, tuple(conversations), source=source, display=display)


class _Merge:
    """The merge rules for one conversation, recording where each merged value came from."""

    def __init__(self, top: dict[str, Any], conv: dict[str, Any], prefix: tuple[Any, ...]):
        self.top, self.conv, self.prefix = top, conv, prefix
        self.origins: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def pick(self, key: str, default: Any = None) -> Any:
        """Scalars and lists (messages, turns, cases): the conversation's replaces the file's."""
        for where, part in (((*self.prefix, key), self.conv), ((key,), self.top)):
            if key in part:
                self.origins[(key,)] = where
                return part[key]
        return default

    def models(self) -> tuple[str, tuple[str, ...]]:
        """`model` and `models` as one setting: the conversation's (either) replaces the file's."""
        part = self.conv if ("model" in self.conv or "models" in self.conv) and self.prefix \
            else self.top
        where = self.prefix if part is self.conv else ()
        for key in ("model", "models"):
            if key in part:
                self.origins[(key,)] = (*where, key)
        models = tuple(dict.fromkeys(part.get("models", ())))
        return part.get("model") or models[0], models

    def mapping(self, key: str) -> dict[str, Any]:
        """params and vars: shallow merge, the conversation's keys win."""
        out: dict[str, Any] = {}
        for where, part in (((key,), self.top), ((*self.prefix, key), self.conv)):
            for k, v in part.get(key, {}).items():
                out[k] = v
                self.origins[(key, k)] = (*where, k)
        return out

    def expect(self) -> tuple[Mapping[str, Any], ...]:
        """The file's expectations, then the conversation's."""
        out: list[Mapping[str, Any]] = []
        for where, part in ((("expect",), self.top), ((*self.prefix, "expect"), self.conv)):
            for j, item in enumerate(part.get("expect", [])):
                self.origins[("expect", len(out))] = (*where, j)
                out.append(item)
        return tuple(out)

    def tags(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.top.get("tags", []), *self.conv.get("tags", [])]))


def _check_tools(
    params: Mapping[str, Any],
    origins: Mapping[tuple[Any, ...], tuple[Any, ...]],
    source: SourceMap,
    display: str,
    problems: list[Problem],
) -> None:
    """Function names must be unique: the runner finds a tool's responder by name."""
    seen: set[str] = set()
    tools_at = origins.get(("params", "tools"), ("params", "tools"))
    for i, tool in enumerate(params.get("tools", [])):
        name = tool.get("function", {}).get("name")
        if name is None:
            continue
        if name in seen:
            where = (*tools_at, i, "function", "name")
            pos = source.where(where) or (None, None)
            problems.append(Problem(display, pos[0], pos[1], display_path(where),
                                    f"duplicate function name '{name}'"))
        seen.add(name)


