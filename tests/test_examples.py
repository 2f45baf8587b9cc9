"""Every example in convos/ validates and runs green against the emulator (as CI promises)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from glmrun.cli.main import main
from glmrun.load.spec import discover

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = discover([REPO / "convos"])


def test_there_are_examples_of_every_kind_the_readme_promises() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"greeting", "multi_role", "multi_turn", "cases_csv", "include"} <= names


def test_every_example_validates() -> None:
    result = CliRunner().invoke(main, ["validate", str(REPO / "convos")])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok: {len(EXAMPLES)} files valid\n"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_runs_green_with_mock(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [str(path), "--mock", "-o", str(out), "--no-progress", "--poll-interval", "0.01",
            "--batch-poll", "0.01"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = [p for p in out.glob("*.json") if p.name != "run.json"]  # not the manifest
    assert written and all(json.loads(p.read_text("utf-8"))["status"] == "passed"
                           for p in written)
    assert len(list(out.glob("*.md"))) == len(written)
