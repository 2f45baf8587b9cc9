"""The README works as pasted: its `--help` text is real and its examples run.

Every ```sh / ```console block that runs glmrun is executed, in a copy of the repository's
convos/ with the emulator standing in for Zhipu's API (ZHIPUAI_BASE_URL and a key set, as the
README tells a user to). Lines that install (python3 -m venv, pip install) are left out: the
tests already run in an installed venv, and installing needs the network. A console block's
output must be what the command prints (timings aside). A ```yaml block right after a line
naming a file (`convos/bad.yaml`:) is that file, written for the next block.

Regenerate the help text with: python tests/test_readme.py
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from fixtures.e2e.harness import KEY
from fixtures.shell import shell, valid_workflow
from packaging.requirements import Requirement

from glmrun import REPOSITORY
from glmrun.cli.main import main
from glmrun.load.project import load_project
from glmrun.mock import MockServer

README = Path(__file__).resolve().parent.parent / "README.md"
REPO = README.parent
BLOCK = re.compile(r"(<!-- help:run [^\n]*-->\n)(.*?)(<!-- /help -->)", re.S)
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.S | re.M)
NAMED = re.compile(r"`([\w./-]+)`:\s*$")  # "Given `convos/bad.yaml`:" before a block
INSTALL = re.compile(r"^\s*(python3 -m venv|pip install)\b")
# the one-line set-up: "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && ..."
INSTALL_PREFIX = re.compile(r"^\s*(?:python3 -m venv \S+ && \. \S+ && )?pip install \S+ && ")


def without_install(line: str) -> str | None:
    """The line less what installs (None when that is all of it)."""
    prefix = INSTALL_PREFIX.match(line)
    if prefix:
        return line[prefix.end():]
    return None if INSTALL.match(line) else line
RUNS_GLMRUN = re.compile(r"(^|[\s;&|(])glmrun\s", re.M)


@dataclass
class Block:
    line: int
    lang: str
    body: str
    section: str
    files: dict[str, str] = field(default_factory=dict)  # named blocks just before it


def readme_blocks() -> list[Block]:
    text = README.read_text("utf-8")
    blocks: list[Block] = []
    named: dict[str, str] = {}
    for match in FENCE.finditer(text):
        indent = len(match.group("indent"))
        body = "".join(line[indent:] + "\n" for line in match.group("body").splitlines())
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = text.count("\n", 0, match.start()) + 1
        sections = re.findall(r"^## (.+)$", text[:match.start()], re.M)
        block = Block(line, match.group("lang"), body, sections[-1] if sections else "")
        name = NAMED.search(before)
        if name and block.lang in ("yaml", "toml", "csv"):
            named[name.group(1)] = body
        elif block.lang in ("sh", "console"):
            block.files, named = named, {}
        blocks.append(block)
    return blocks


def shell_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.lang in ("sh", "console")
            and RUNS_GLMRUN.search(b.body.replace("$ ", ""))]


def yaml_block(section: str, containing: str) -> str:
    (block,) = [b for b in readme_blocks() if b.lang == "yaml" and b.section == section
                and containing in b.body]
    return block.body


@pytest.fixture
def world(tmp_path: Path, server: MockServer) -> Iterator[tuple[Path, dict[str, str]]]:
    """A copy of the repository's suite, and the environment the README tells a user to set."""
    shutil.copytree(REPO / "convos", tmp_path / "convos")
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    yield tmp_path, {"ZHIPUAI_API_KEY": KEY, "ZHIPUAI_BASE_URL": server.base_url}


def console_steps(body: str) -> Iterator[tuple[str, list[str]]]:
    """(command, the lines it prints) for each `$ ` line of a console block."""
    command, shown = None, []
    for line in body.splitlines():
        if line.startswith("$ "):
            if command:
                yield command, shown
            command, shown = line[2:], []
        else:
            shown.append(line)
    if command:
        yield command, shown


def same_output(shown: list[str], printed: list[str]) -> bool:
    """Printed as shown, timings aside; a line shown cut with '…' is a prefix."""
    def timeless(line: str) -> str:
        return re.sub(r"\d+\.\d+s\b", "<t>s", line)

    if len(shown) != len(printed):
        return False
    for want, got in zip(map(timeless, shown), map(timeless, printed), strict=True):
        if not (got == want or (want.endswith("…") and got.startswith(want[:-1]))):
            return False
    return True


def test_the_readme_has_the_shell_blocks_a_user_pastes_first() -> None:
    sections = [b.section for b in shell_blocks()]
    for section in ("", "Set up", "Start a suite", "A conversation file", "Batch mode"):
        assert section in sections, section


@pytest.mark.parametrize("block", shell_blocks(), ids=lambda b: f"README.md:{b.line}")
@pytest.mark.timeout(60)
@pytest.mark.slow
def test_every_shell_block_that_runs_glmrun_runs_as_shown(
        block: Block, world: tuple[Path, dict[str, str]]) -> None:
    root, env = world
    for name, text in block.files.items():
        (root / name).write_text(text, "utf-8")
    if block.lang == "sh":
        kept = (without_install(line) for line in block.body.splitlines())
        script = "\n".join(line for line in kept if line is not None)
        done = shell(script, root, **env)
        assert done.returncode == 0, f"{script}\n{done.stdout}{done.stderr}"
        return
    for command, shown in console_steps(block.body):
        done = shell(command + " 2>&1", root, **env)
        printed = done.stdout.splitlines()
        assert same_output(shown, printed), f"$ {command}\n" + "\n".join(printed)


def help_block() -> str:
    text = CliRunner().invoke(main, ["run", "--help"], terminal_width=100).stdout
    return "```text\n" + text.replace("Usage: main run", "Usage: glmrun run") + "```\n"


def test_readme_help_block_is_current() -> None:
    match = BLOCK.search(README.read_text("utf-8"))
    assert match, "the README lost its help:run block"
    assert match.group(2) == help_block(), "run: python tests/test_readme.py"


def test_readme_names_the_same_test_command_as_ci() -> None:
    steps = [line for line in (REPO / ".ci" / "run").read_text("utf-8").splitlines()
             if line and not line.startswith(("#", " ", "echo ", "set ", "cd ", "if ", "fi"))]
    assert steps == ["python3 -m venv .venv-ci", ". .venv-ci/bin/activate",
                     "python -m pip install -q --upgrade pip >/dev/null",
                     "pip install -e '.[test]' && pytest",  # the README's, verbatim
                     "ruff check glmrun tests bench", "mypy"]  # lint and types: steps of their own
    text = README.read_text("utf-8")
    assert "pip install -e '.[test]' && pytest\n" in text
    assert "`ruff check glmrun tests bench` and `mypy`" in text
    assert not list((REPO / "tests").glob("test_quality*.py"))  # not inside pytest


def test_the_readme_python_example_runs_as_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = README.read_text("utf-8")
    section = text[text.index("## From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the README lost its Python example"
    (tmp_path / "convos").mkdir()
    shutil.copy(README.parent / "convos" / "greeting.yaml", tmp_path / "convos")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZHIPUAI_API_KEY", raising=False)
    monkeypatch.delenv("ZHIPU_API_KEY", raising=False)
    exec(compile(code.group(1), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "{'greeting': 'passed'}"
    tokens, exit_code = printed[1].split()
    assert int(tokens) > 0 and exit_code == "0"
    assert (tmp_path / "glmrun-out" / "greeting.json").is_file()


def test_the_conversation_file_example_passes_with_mock(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    text = yaml_block("A conversation file", "conversations:")
    shutil.copytree(REPO / "convos" / "prompts", tmp_path / "convos" / "prompts")
    (tmp_path / "convos" / "example.yaml").write_text(text, "utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["convos/example.yaml", "--mock", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "\n2 runs of 1 conversation: 2 passed, 0 failed, 0 errors\n" in result.stdout


def test_the_project_settings_example_is_a_valid_project_file(tmp_path: Path) -> None:
    (block,) = [b for b in readme_blocks() if b.lang == "toml"
                and b.section == "Project settings"]
    (tmp_path / "pyproject.toml").write_text(block.body, "utf-8")
    assert set(load_project(tmp_path).settings) == {"out", "formats", "concurrency", "model",
                                                    "cache", "sdk", "region", "allow_hosts"}


def glmrun_commit(sha: str) -> bool:
    """sha is a commit of this repository that declares the glmrun-validate hook."""
    hooks = subprocess.run(["git", "-C", str(REPO), "show", f"{sha}:.pre-commit-hooks.yaml"],
                           capture_output=True, text=True)
    return hooks.returncode == 0 and any(
        h["id"] == "glmrun-validate" for h in yaml.safe_load(hooks.stdout))


def test_the_pre_commit_example_pins_a_real_commit(tmp_path: Path) -> None:
    from pre_commit.clientlib import load_config, load_manifest

    config = tmp_path / ".pre-commit-config.yaml"
    config.write_text(yaml_block("In CI", "glmrun-validate"), "utf-8")
    (repo,) = load_config(config)["repos"]  # pre-commit's own validator
    assert repo["repo"] == REPOSITORY
    assert re.fullmatch(r"[0-9a-f]{40}", repo["rev"]) and glmrun_commit(repo["rev"])
    declared = {h["id"] for h in load_manifest(REPO / ".pre-commit-hooks.yaml")}
    assert {h["id"] for h in repo["hooks"]} <= declared


def job_runs(job: dict[str, Any]) -> Iterator[list[str]]:
    """Each matrix combination's `run:` steps, with `${{ matrix.X }}` filled in."""
    matrix = (job.get("strategy") or {}).get("matrix") or {}
    names = sorted(matrix)
    for values in itertools.product(*(matrix[n] for n in names)):
        filled = dict(zip(names, map(str, values), strict=True))
        yield [re.sub(r"\$\{\{ matrix\.(\w+) \}\}", lambda m, f=filled: f[m.group(1)],
                      step["run"]) for step in job["steps"] if "run" in step]


@pytest.mark.timeout(90)
@pytest.mark.slow
def test_the_github_actions_example_is_valid_and_its_jobs_run(
        world: tuple[Path, dict[str, str]]) -> None:
    """The workflow as GitHub reads it, and its jobs' commands as the jobs run them (each a
    process of its own, ~1 s: this is the slowest README test, and the one a CI user pastes)."""
    root, env = world
    workflow = valid_workflow(yaml_block("In CI", "runs-on:"))
    text = README.read_text("utf-8")
    refresh = re.search(r"`(ZHIPUAI_API_KEY=\.\.\. glmrun [^`]+)`", text)
    assert refresh  # where the key is available: the emulator stands in for the API
    assert shell(refresh.group(1), root, ZHIPUAI_BASE_URL=env["ZHIPUAI_BASE_URL"]).returncode == 0
    assert list(workflow["jobs"]) == ["suite", "verdict"]
    assert workflow["jobs"]["verdict"]["needs"] == "suite"
    done_before: set[str] = set()  # `glmrun validate convos/` once, not once per shard
    for job in workflow["jobs"].values():  # in order, each matrix combination
        for runs in job_runs(job):
            install = re.fullmatch(r'pip install "(.+)"', runs[0])
            assert install, runs[0]
            url = Requirement(install.group(1)).url or ""
            assert url.startswith(f"git+{REPOSITORY}@") and glmrun_commit(url.rsplit("@")[-1])
            for command in runs[1:]:  # in CI: no key, no network
                assert "${{" not in command
                if command in done_before:
                    continue
                done_before.add(command)
                done = shell(command, root)
                assert done.returncode == 0, command + done.stdout + done.stderr
    shards = sorted(p.name for p in root.glob("shard-*"))
    assert shards == ["shard-1", "shard-2", "shard-3"]
    merged = json.loads((root / "transcripts" / "run.json").read_text("utf-8"))
    assert merged["totals"]["runs"] == merged["totals"]["passed"] == 17
    (upload,) = [s for s in workflow["jobs"]["verdict"]["steps"]
                 if s.get("uses", "").startswith("actions/upload")]
    for path in upload["with"]["path"].split():
        assert (root / path).exists(), path


if __name__ == "__main__":
    text = README.read_text("utf-8")
    README.write_text(BLOCK.sub(lambda m: m.group(1) + help_block() + m.group(3), text), "utf-8")
