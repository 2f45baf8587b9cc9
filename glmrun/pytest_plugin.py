"""pytest plugin: `pytest convos/ --glmrun-mock` runs conversation files as test items.

Which YAML files are collected — never arbitrary YAML from a project:
  * the file is under a path pytest collects (the command line's, or `testpaths`), ends in
    `.yaml` / `.yml`, and neither its name nor a folder between it and the rootdir starts
    with `_` (`_data/`, `_shared.yaml` hold includes and case tables, not conversations);
  * it looks like a conversation file: a top-level `messages:` or `conversations:` key
    (a cheap text check, so a broken file is still collected and reports its problems);
  * and the project opted in: `--glmrun` (implied by `--glmrun-mock` / `--glmrun-replay`),
    the ini option `glmrun_collect = true`, or the file's own editor modeline
    `# yaml-language-server: $schema=.../convo.schema.json`.

One item per planned run (conversation × case × repeat), named by its plan id. The plans of a
file run together, through the real runner, when the first of them is reached; an item passes
when its transcript's status is "passed". Transcripts go to `--glmrun-out` (default: a folder
under pytest's base temp), one subfolder per file.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from glmrun import errors
from glmrun.errors import ConvoError

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr, TracebackStyle

    from glmrun.output.summary import RunRow, RunSummary
    from glmrun.plan.plans import RunPlan

SUFFIXES = (".yaml", ".yml")
HEAD_CHARS = 65536
# how to run without a key here: the plugin's options (it takes no --mock)
OFFLINE_HINT = "run with --glmrun-mock (the built-in emulator) or --glmrun-replay DIR"
_CONVO_KEY = re.compile(r"^(?:messages|conversations)[ \t]*:", re.MULTILINE)
_MODELINE = re.compile(r"yaml-language-server:\s*\$schema=\S*convo\.schema\.json")
_INI_BOOL: Literal["bool"] = "bool"  # a name, not a literal: mypy 1.20 misreads "bool" as a type


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("glmrun", "glmrun conversation files")
    group.addoption("--glmrun", action="store_true", default=False,
                    help="Collect conversation files (YAML with messages/conversations) as tests.")
    group.addoption("--glmrun-mock", action="store_true", default=False,
                    help="Run conversations against glmrun's built-in emulator (implies --glmrun).")
    group.addoption("--glmrun-replay", metavar="DIR", default=None,
                    help="Answer from a `glmrun --record` folder, no key (implies --glmrun).")
    group.addoption("--glmrun-out", metavar="DIR", default=None,
                    help="Folder for transcripts (default: under pytest's base temp).")
    parser.addini("glmrun_collect", type=_INI_BOOL, default=False,
                  help="Collect conversation files as tests without --glmrun.")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ConvoFile | None:
    if file_path.suffix not in SUFFIXES or not _under_allowed_folders(file_path, parent.config):
        return None
    try:
        head = file_path.read_text(encoding="utf-8", errors="replace")[:HEAD_CHARS]
    except OSError:
        return None
    if not _CONVO_KEY.search(head):
        return None
    if not (_opted_in(parent.config) or _MODELINE.search(head)):
        return None
    convo_file: ConvoFile = ConvoFile.from_parent(parent, path=file_path)
    return convo_file


def _opted_in(config: pytest.Config) -> bool:
    return bool(
        config.getoption("glmrun") or config.getoption("glmrun_mock")
        or config.getoption("glmrun_replay") or config.getini("glmrun_collect")
    )


def _under_allowed_folders(path: Path, config: pytest.Config) -> bool:
    try:
        parts = path.resolve().relative_to(config.rootpath.resolve()).parts
    except ValueError:
        parts = (path.name,)
    return not any(part.startswith("_") for part in parts)


class ConvoFile(pytest.File):
    """A conversation file: its planned runs are the items; they run together once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rows: dict[str, RunRow] | None = None
        self._passed: set[str] = set()  # passed on their own: the summary keeps ids only
        self._run_error: errors.GlmrunError | None = None
        self._fatal: errors.ApiError | errors.OutputError | None = None
        self._plans: dict[str, RunPlan] = {}

    def collect(self) -> Iterator[ConvoItem]:
        from glmrun import api

        plans = api.load_plans(api.Selection(paths=(self.path,)))
        for plan in plans:
            self._plans[plan.id] = plan
            item: ConvoItem = ConvoItem.from_parent(self, name=plan.id, plan=plan)
            yield item

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, errors.SpecError):
            n = len(excinfo.value.problems)
            return f"{excinfo.value}\n{n} problem{'s' if n != 1 else ''} found"
        if isinstance(excinfo.value, errors.GlmrunError):
            return f"error: {excinfo.value}"
        return super().repr_failure(excinfo)

    def row(self, plan_id: str) -> RunRow | None:
        """This plan's result, running the file's selected plans the first time it is asked.

        None: it passed on its own (the run keeps only the ids of those).
        """
        if self._rows is None and self._run_error is None:
            selected = {i.name for i in self.session.items if i.parent is self}
            plans = [p for pid, p in self._plans.items() if pid in selected or pid == plan_id]
            try:
                summary = _run(plans, self.config, self.out_dir)
                self._rows = {r.id: r for r in summary.rows}
                self._passed, self._fatal = set(summary.passed_ids), summary.fatal
            except errors.GlmrunError as exc:
                self._run_error = exc
        if self._run_error is not None:
            raise ConvoError(f"error: {self._run_error}")
        assert self._rows is not None
        if plan_id in self._passed:
            return None
        row = self._rows.get(plan_id)
        if row is None:
            raise ConvoError("not run: the run stopped before this conversation started"
                             + (f" after: {self._fatal}" if self._fatal else ""))
        return row

    @property
    def out_dir(self) -> Path:
        root = self.config.getoption("glmrun_out")
        base = Path(root) if root else _base_temp(self.config) / "glmrun"
        try:
            rel = self.path.resolve().relative_to(self.config.rootpath.resolve())
        except ValueError:
            rel = Path(self.path.name)
        return base / rel.with_suffix("")


class ConvoItem(pytest.Item):
    """One planned run of a conversation; passes when its transcript's status is "passed"."""

    def __init__(self, *, plan: RunPlan, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan

    def runtest(self) -> None:
        assert isinstance(self.parent, ConvoFile)
        row = self.parent.row(self.plan.id)
        if row is not None and row.status != "passed":
            raise ConvoError(_explain(row, self.parent.out_dir))

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, ConvoError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        at = self.plan.spec.at
        line = at.line - 1 if at is not None and at.line is not None else None
        return self.path, line, f"glmrun: {self.plan.id}"


def _explain(row: RunRow, out_dir: Path) -> str:
    lines = [f"{row.id}: {row.status}"]
    lines += [f"  expectation failed: {reason}" for reason in row.failures]
    if row.error:
        lines.append(f"  error: {row.error}")  # the kind says whether the API gave it
    if row.reply_preview:
        lines.append(f"  last reply: {_clip(row.reply_preview)}")
    lines.append(f"  transcript: {out_dir / (row.id + '.json')}")
    return "\n".join(lines)


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _base_temp(config: pytest.Config) -> Path:
    factory = getattr(config, "_tmp_path_factory", None)  # pytest's, kept 3 runs back
    if factory is not None:
        return Path(factory.getbasetemp())
    return Path(tempfile.mkdtemp(prefix="glmrun-pytest-"))


def _run(plans: Sequence[RunPlan], config: pytest.Config, out_dir: Path) -> RunSummary:
    from glmrun import api
    from glmrun.run.limits import PollPolicy
    from glmrun.run.options import RunOptions

    replay = config.getoption("glmrun_replay")
    quick = bool(replay or config.getoption("glmrun_mock"))  # nothing to wait for: poll fast
    if replay:
        from glmrun.backends.recording import replay_wrap
        from glmrun.backends.store import ReplyStore

        if not Path(replay).is_dir():
            raise errors.InputError(f"--glmrun-replay {replay}: no such folder")
        settings = api.BackendSettings(wrap=replay_wrap(ReplyStore(Path(replay))),
                                           needs_key=False)
    else:
        settings = api.BackendSettings(mock=bool(config.getoption("glmrun_mock")),
                                       offline_hint=OFFLINE_HINT)
    options = RunOptions(
        out_dir=out_dir,
        poll=PollPolicy(start_s=0.02, factor=1.5, ceiling_s=0.5) if quick else PollPolicy(),
    )
    return api.run_plans(plans, settings, options)
