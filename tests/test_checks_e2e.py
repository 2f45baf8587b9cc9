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


TOOL_IN_TURN_1 = """\
    model: glm-4-flash
    params:
      tools:
        - type: function
          function: {name: get_weather, parameters: {type: object}}
          respond: {result: 晴}
    messages:
      - {role: user, content: '天气？ [[tool:get_weather {"city": "北京"}]]'}
    turns:
      - content: 谢谢
        expect:
          - {name: later turn, tool_call: get_weather}
    expect:
      - {name: whole, tool_call: get_weather, arguments: {city: 北京}}
      - {name: never, tool_call: get_time}
"""


def test_a_conversation_tool_call_sees_every_turn(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = glmrun(write(tmp_path, "calls.yaml", TOOL_IN_TURN_1), "--mock", "-o", out)
    assert result.exit_code == 1, result.output
    t: dict[str, Any] = transcripts(out)["calls"]
    assert [(c["turn"], c["round"], c["finish_reason"]) for c in t["calls"]] == [
        (0, 0, "tool_calls"), (0, 1, "stop"), (1, 0, "stop")]
    assert [(e["turn"], e["name"], e["passed"], e["reason"]) for e in t["expectations"]] == [
        (1, "later turn", False, "expected a call to tool 'get_weather', but no tool was called"),
        (None, "whole", True, """called 'get_weather' with {"city": "北京"}"""),
        (None, "never", False, "expected a call to tool 'get_time'; tools called: get_weather"),
    ]


def test_the_markdown_case_row_matches_the_run_id(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = write(tmp_path, "rows.yaml", """\
        model: glm-4-flash
        messages: [{role: user, content: "{{ q }}"}]
        cases: [{q: a}, {q: b}, {q: c}, {id: last, q: d}]
    """)
    result = glmrun(path, "--mock", "-o", out)
    assert result.exit_code == 0, result.output
    rows = {
        p.stem: [line for line in p.read_text(encoding="utf-8").splitlines()
                 if line.startswith("| Case |")]
        for p in sorted(out.glob("rows--*.md"))
    }
    assert rows == {
        "rows--case1": ['| Case | `case1`: `{"q": "a"}` |'],
        "rows--case2": ['| Case | `case2`: `{"q": "b"}` |'],
        "rows--case3": ['| Case | `case3`: `{"q": "c"}` |'],
        "rows--last": ['| Case | `last`: `{"id": "last", "q": "d"}` |'],
    }
