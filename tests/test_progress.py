"""The closing summary (its table by conversation, counts and hints) and live output."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

from glmrun.backends.scripted import ScriptedBackend, text_reply
from glmrun.load.spec import load_file
from glmrun.output.progress import ConsoleReporter, render_summary, render_table
from glmrun.output.summary import RunRow, RunSummary, Tally
from glmrun.plan.plans import plan_runs
from glmrun.run.options import RunOptions
from glmrun.run.runner import Runner
from glmrun.types import ToolCall

SUITE = """
    model: m
    conversations:
      - name: ask
        messages: [{role: user, content: "q {{ n }}"}]
        cases: [{n: 1}, {n: 2}, {n: 3}]
        expect: [{contains: "q"}]
      - name: twice
        repeat: 2
        messages: [{role: user, content: again}]
        expect: [{contains: good}]
"""


def run_suite(tmp_path: Path, backend: ScriptedBackend, **opts: Any) -> RunSummary:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SUITE), encoding="utf-8")
    options = RunOptions(out_dir=tmp_path / "out", formats=("json",), concurrency=1, **opts)
    return Runner(backend, options).run(plan_runs([load_file(path)]))


def test_tallies_count_every_case_and_repeat_of_a_conversation(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    backend.enqueue(text_reply("q 1"), text_reply("nope"), text_reply("q 3"),
                    text_reply("good"), text_reply("bad"))
    summary = run_suite(tmp_path, backend)
    ask, twice = summary.tallies["s--ask"], summary.tallies["s--twice"]
    assert (ask.runs, ask.passed, ask.failed, ask.errors) == (3, 2, 1, 0)
    assert (twice.runs, twice.passed, twice.failed) == (2, 1, 1)
    assert ask.tokens + twice.tokens == summary.tokens > 0
    assert ask.duration_ms > 0

    resumed = run_suite(tmp_path, ScriptedBackend(), resume=True)  # all reused
    assert resumed.tallies == summary.tallies


def test_the_table_lists_each_conversation_with_what_did_not_pass_first() -> None:
    tallies = {
        "alpha": Tally(runs=3, passed=3, tokens=30, duration_ms=3000.0),
        "beta": Tally(runs=2, passed=1, errors=1, tokens=7, duration_ms=500.0),
    }
    assert render_table(tallies) == [
        "conversation  runs  passed  failed  errors    tokens  time/run",
        "beta             2       1       0       1         7     0.25s",
        "alpha            3       3       0       0        30     1.00s",
    ]
    assert render_table({}) == []


def test_past_its_limit_the_table_counts_the_rest_and_never_hides_a_failure_first() -> None:
    tallies = {f"c{i:02d}": Tally(runs=2, passed=2, tokens=1, duration_ms=1.0)
               for i in range(40)}
    tallies["c39"] = Tally(runs=2, passed=0, failed=2, tokens=1, duration_ms=1.0)
    lines = render_table(tallies, limit=5)
    assert len(lines) == 1 + 5 + 1
    assert lines[1].startswith("c39 ")  # the failure, though last by name
    assert lines[-1] == "… 35 more conversations: 70 runs, 70 passed, 0 failed, 0 errors"


def test_the_summary_shows_the_table_only_when_more_than_one_ran(tmp_path: Path) -> None:
    summary = run_suite(tmp_path, ScriptedBackend(default=lambda r: text_reply("q good")))
    text = render_summary(summary)
    assert text.splitlines()[0].startswith("conversation  runs")
    assert "s--ask" in text and "s--twice" in text
    assert "5 runs of 2 conversations: 5 passed, 0 failed, 0 errors" in text

    single = RunSummary(total=1)
    single.tallies["one"] = Tally(runs=1, passed=1)
    single.passed_ids.append("one")
    assert "conversation  runs" not in render_summary(single)


def test_the_summary_counts_runs_of_conversations_and_says_one_error() -> None:
    summary = RunSummary(total=15, conversations=7)
    summary.rows.append(RunRow(id="x", name="x", group="x", pass_rate=1.0, status="error",
                               tokens=0, duration_ms=0.0))
    assert render_summary(summary).splitlines()[0] == (
        "15 runs of 7 conversations: 0 passed, 0 failed, 1 error")
    assert render_summary(RunSummary(total=3, conversations=3)).splitlines()[0] == (
        "3 conversations: 0 passed, 0 failed, 0 errors")


def test_live_output_puts_each_turn_on_its_own_labelled_line_and_redacts_across_turns(
    tmp_path: Path,
) -> None:
    key = "abcdefgh1234.secretpart5678"
    path = tmp_path / "chat.yaml"
    path.write_text(textwrap.dedent("""
        model: m
        mode: stream
        messages: [{role: user, content: hi}]
        turns: [again]
    """), encoding="utf-8")
    backend = ScriptedBackend()
    # turn 0 ends with the key: the redactor holds it back until the turn's line is closed
    backend.enqueue(text_reply(f"one {key}"), text_reply(f"{key} two"))
    out, err = io.StringIO(), io.StringIO()
    reporter = ConsoleReporter(out=out, err=err, live=True, secrets=[key])
    options = RunOptions(out_dir=tmp_path / "out", formats=("json",), concurrency=1)
    Runner(backend, options, reporter=reporter).run(plan_runs([load_file(path)]))
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["[chat turn 0] one ***", "[chat turn 1] *** two"]
    assert lines[2].startswith("✔ chat  ")


def test_live_output_labels_a_reply_after_tool_results_with_its_round(tmp_path: Path) -> None:
    path = tmp_path / "tool.yaml"
    path.write_text(textwrap.dedent("""
        model: m
        mode: stream
        params:
          tools:
            - type: function
              function: {name: look, parameters: {type: object}}
              respond: {result: found}
        messages: [{role: user, content: hi}]
    """), encoding="utf-8")
    backend = ScriptedBackend()
    backend.enqueue(text_reply("let me look", tool_calls=(ToolCall("c1", "look", "{}"),)),
                    text_reply("it is found"))
    out = io.StringIO()
    reporter = ConsoleReporter(out=out, err=io.StringIO(), live=True)
    options = RunOptions(out_dir=tmp_path / "out", formats=("json",), concurrency=1)
    Runner(backend, options, reporter=reporter).run(plan_runs([load_file(path)]))
    assert out.getvalue().splitlines()[:2] == [
        "[tool turn 0] let me look", "[tool turn 0, round 1] it is found"]
