"""The README's CLI reference is the real `--help` text.

Regenerate it with: python tests/test_readme.py
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from glmrun.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- help:run [^\n]*-->\n)(.*?)(<!-- /help -->)", re.S)


def help_block() -> str:
    text = CliRunner().invoke(main, ["run", "--help"], terminal_width=100).stdout
    return "```text\n" + text.replace("Usage: main run", "Usage: glmrun run") + "```\n"


def test_readme_help_block_is_current() -> None:
    match = BLOCK.search(README.read_text("utf-8"))
    assert match, "the README lost its help:run block"
    assert match.group(2) == help_block(), "run: python tests/test_readme.py"


def test_readme_names_the_same_test_command_as_ci() -> None:
    ci = (README.parent / ".ci" / "run").read_text("utf-8").strip().splitlines()[-1]
    assert ci == "pip install -e '.[test]' && pytest"
    assert "pip install -e '.[test]' && pytest\n" in README.read_text("utf-8")


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


if __name__ == "__main__":
    text = README.read_text("utf-8")
    README.write_text(BLOCK.sub(lambda m: m.group(1) + help_block() + m.group(3), text), "utf-8")
