"""The pytest plugin: conversation files collected and run as test items (via pytester)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PASSING = """\
model: glm-4-flash
messages:
  - {role: user, content: 你好}
expect:
  - contains: 智谱
"""

FAILING = """\
model: glm-4-flash
messages:
  - {role: user, content: 今天天气怎么样？}
expect:
  - contains: 晴天
"""

SUITE = """\
model: glm-4-flash
conversations:
  - name: hi
    messages: [{role: user, content: 你好}]
  - name: bye
    messages: [{role: user, content: 再见}]
    expect: [{contains: 再见}]
"""

MODELINE = "# yaml-language-server: $schema=../schemas/convo.schema.json\n"


def _entry_point_installed() -> bool:
    return any(ep.value == "glmrun.pytest_plugin"
               for ep in importlib.metadata.entry_points(group="pytest11"))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A subprocess, as a user runs it: the plugin loads through its pytest11 entry point (a
    # checkout installed before the entry point existed needs it named), and glmrun's modules
    # are imported fresh (in-process runs re-import them half-way, breaking isinstance checks).
    # The inner session keeps the files' order (no pytest-randomly): the tests read it.
    plugin = () if _entry_point_installed() else ("-p", "glmrun.pytest_plugin")
    return pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider", "-p", "no:randomly",
                                         *args)


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    assert '[project.entry-points.pytest11]\nglmrun = "glmrun.pytest_plugin"\n' in text


@pytest.mark.slow
def test_passing_and_failing_conversations_with_the_failed_expectation_shown(
    pytester: pytest.Pytester,
) -> None:
    convos = pytester.mkdir("convos")
    (convos / "good.yaml").write_text(PASSING, encoding="utf-8")
    (convos / "bad.yaml").write_text(FAILING, encoding="utf-8")
    out = pytester.path / "out"
    result = run(pytester, "convos", "--glmrun-mock", "--glmrun-out", str(out), "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "convos/bad.yaml::bad FAILED*",
        "convos/good.yaml::good PASSED*",
        "*_ glmrun: bad _*",
        "bad: failed",
        "  expectation failed: expected reply to contain '晴天'",
        "  last reply: Echo: 今天天气怎么样？ (1 messages)",
        f"  transcript: {out / 'convos' / 'bad' / 'bad.json'}",
    ])
    assert (out / "convos" / "good" / "good.json").is_file()


@pytest.mark.slow
def test_each_planned_run_is_an_item_and_a_file_runs_once(pytester: pytest.Pytester) -> None:
    (pytester.path / "suite.yaml").write_text(SUITE, encoding="utf-8")
    result = run(pytester, "--glmrun-mock", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["suite.yaml::suite--hi PASSED*", "suite.yaml::suite--bye PASSED*"]
    )


@pytest.mark.slow
def test_a_deselected_run_is_not_called(pytester: pytest.Pytester) -> None:
    (pytester.path / "suite.yaml").write_text(SUITE, encoding="utf-8")
    out = pytester.path / "out"
    result = run(pytester, "--glmrun-mock", "--glmrun-out", str(out), "-k", "bye")
    result.assert_outcomes(passed=1, deselected=1)
    assert sorted(p.name for p in (out / "suite").glob("*.json")) == ["run.json",
                                                                        "suite--bye.json"]


@pytest.mark.slow
def test_an_api_error_is_reported_as_the_failure(pytester: pytest.Pytester) -> None:
    (pytester.path / "broken.yaml").write_text(
        "model: glm-4-flash\nmessages:\n  - {role: user, content: 'hi [[fault:400]]'}\n",
        encoding="utf-8",
    )
    result = run(pytester, "--glmrun-mock")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["broken: error", "  error: bad_request: *"])


@pytest.mark.slow
def test_an_invalid_file_is_a_collection_error_listing_its_problems(
    pytester: pytest.Pytester,
) -> None:
    (pytester.path / "wrong.yaml").write_text(
        "model: glm-4-flash\nmessages:\n  - {role: usr, content: hi}\n", encoding="utf-8",
    )
    result = run(pytester, "--glmrun-mock")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*wrong.yaml:3:*role*usr*", "1 problem found"])


@pytest.mark.slow
def test_only_opted_in_conversation_files_are_collected(pytester: pytest.Pytester) -> None:
    pytester.mkdir("convos")
    pytester.mkdir("convos/_data")
    (pytester.path / "convos" / "plain.yaml").write_text(PASSING, encoding="utf-8")
    (pytester.path / "convos" / "tagged.yaml").write_text(MODELINE + PASSING, encoding="utf-8")
    (pytester.path / "convos" / "_shared.yaml").write_text(PASSING, encoding="utf-8")
    (pytester.path / "convos" / "_data" / "more.yaml").write_text(PASSING, encoding="utf-8")
    (pytester.path / "config.yaml").write_text("name: app\nport: 80\n", encoding="utf-8")

    without_opt_in = run(pytester, "--collect-only", "-q")
    without_opt_in.stdout.fnmatch_lines(["convos/tagged.yaml::tagged", "1 test collected*"])

    flagged = run(pytester, "--glmrun", "--collect-only", "-q")
    flagged.stdout.fnmatch_lines(
        ["convos/plain.yaml::plain", "convos/tagged.yaml::tagged", "2 tests collected*"]
    )

    pytester.makeini("[pytest]\nglmrun_collect = true\n")
    by_ini = run(pytester, "--collect-only", "-q")
    by_ini.stdout.fnmatch_lines(["*2 tests collected*"])


@pytest.mark.slow
def test_replay_runs_a_recorded_suite_without_key_or_network(
    pytester: pytest.Pytester, tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from glmrun.cli.main import main

    convo = pytester.path / "good.yaml"
    convo.write_text(PASSING, encoding="utf-8")
    rec = tmp_path / "rec"
    recorded = CliRunner().invoke(main, ["run", str(convo), "--mock", "--record", str(rec),
                                         "-o", str(tmp_path / "out"), "--no-progress"])
    assert recorded.exit_code == 0, recorded.output
    result = run(pytester, "--glmrun-replay", str(rec), "good.yaml")
    result.assert_outcomes(passed=1)

    empty = tmp_path / "empty"
    empty.mkdir()
    missed = run(pytester, "--glmrun-replay", str(empty), "good.yaml")
    missed.assert_outcomes(failed=1)
    missed.stdout.fnmatch_lines(["  error: replay_miss: no recording in *"])


@pytest.mark.slow
def test_without_a_key_the_failure_says_how_to_run_offline(pytester: pytest.Pytester) -> None:
    (pytester.path / "good.yaml").write_text(PASSING, encoding="utf-8")
    result = run(pytester, "--glmrun")
    result.assert_outcomes(failed=1)
    (line,) = [x for x in result.stdout.lines if x.startswith("error: no API key")]
    assert line == ("error: no API key: set ZHIPUAI_API_KEY (or ZHIPU_API_KEY) or put it in the "
                    "project's .env, or run with --glmrun-mock (the built-in emulator) or "
                    "--glmrun-replay DIR")  # not the CLI's --mock, which pytest does not take
