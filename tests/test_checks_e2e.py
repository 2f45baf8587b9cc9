"""Issue 13, checks end to end under `--mock`: the judge graded by the emulator, and a
conversation's `tool_call` seeing every turn's calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fixtures.e2e.harness import glmrun, transcripts, write

GRADED = """\
    model: glm-4-flash
    messages:
      - {role: user, content: 巴黎是法国的首都}
    conversations:
      - name: holds
        expect:
          - judge: 'The reply names "巴黎" and says "首都".'
      - name: lacks
        expect:
          - judge: 'The reply names “巴黎” and “伦敦”.'
      - name: unquoted
        expect:
          - judge: The reply names the capital.
"""


def verdicts(out: Path) -> dict[str, tuple[str, list[tuple[bool, str]]]]:
    return {
        run_id: (t["status"], [(e["passed"], e["reason"]) for e in t["expectations"]])
        for run_id, t in transcripts(out).items()
    }


def test_the_emulator_grades_a_judge_rubric_by_its_quoted_phrases(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = glmrun(write(tmp_path, "graded.yaml", GRADED), "--mock", "-o", out)
    assert result.exit_code == 1, result.output
    assert verdicts(out) == {
        "graded--holds": ("passed", [(True, 'judge: the reply holds "巴黎", "首都"')]),
        "graded--lacks": ("failed", [(False, 'judge: the reply lacks "伦敦"')]),
        "graded--unquoted": ("failed", [(
            False, 'judge: the emulator grades a rubric by its "quoted" phrases; it has none')]),
    }


def test_a_judge_sees_the_reply_not_the_rubric(tmp_path: Path) -> None:
    """The phrase must be in the graded reply: quoting it in the rubric alone is not enough."""
    out = tmp_path / "out"
    path = write(tmp_path, "only.yaml", """\
        model: glm-4-flash
        messages: [{role: user, content: hello}]
        expect: [{judge: 'says "hello"'}, {judge: 'says "goodbye"'}]
    """)
    result = glmrun(path, "--mock", "-o", out)
    assert result.exit_code == 1, result.output
    assert verdicts(out)["only"] == ("failed", [
        (True, 'judge: the reply holds "hello"'), (False, 'judge: the reply lacks "goodbye"')])
