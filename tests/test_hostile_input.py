"""Hostile input (issue 10): numbers JSON cannot carry, catastrophic regexes, template bombs,
unbounded plans, FIFOs, long names, unreadable folders. Each is an input error (exit 2) with
file:line where there is one, or is made safe; never a traceback, a hang or a memory blow-up."""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from glmrun.cli.main import main
from glmrun.errors import RenderError
from glmrun.load.spec import load_file
from glmrun.plan.ids import MAX_ID_BYTES
from glmrun.plan.plans import plan_runs
from glmrun.plan.sandbox import MAX_SIZE
from glmrun.plan.templating import Renderer
from glmrun.run.tools import answer_tool_call
from glmrun.safety.atomic import encode_json
from glmrun.types import ToolCall


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


CONVO = "model: glm-4-flash\nmessages:\n  - {role: user, content: hi}\n"


def problems(result: Result) -> list[str]:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return [line for line in result.output.splitlines() if not line.endswith("found")]


# --- NaN and infinities --------------------------------------------------------------------

@pytest.mark.parametrize(("text", "where", "literal"), [
    ("vars: {x: .nan}\n", "1:11: vars.x", ".nan"),
    ("vars: {x: [1, {y: -.inf}]}\n", "1:19: vars.x[1].y", "-.inf"),
    ("vars: {x: 1.0e+400}\n", "1:11: vars.x", "1.0e+400"),
    ("params: {extra_body: {penalty: .Inf}}\n", "1:32: params.extra_body.penalty", ".Inf"),
])
def test_yaml_nan_and_infinity_are_refused_where_they_are(
    tmp_path: Path, text: str, where: str, literal: str
) -> None:
    path = write(tmp_path, "c.yaml", text + CONVO)
    reason = (f"{literal!r} is not a finite number: JSON (what the API takes) cannot carry "
              "NaN or infinity (quote it to mean the text)")
    assert problems(cli("validate", str(path))) == [f"{path}:{where}: {reason}"]


@pytest.mark.parametrize(("row", "reason"), [
    ('{"a": NaN}', "NaN is not a JSON number"),
    ('{"a": [Infinity]}', "Infinity is not a JSON number"),
    ('{"a": -Infinity}', "-Infinity is not a JSON number"),
    ('{"a": 1e400}', "1e400 is out of range for a JSON number"),
    ('{"a": ' + "[" * 100 + "]" * 100 + "}", "nesting deeper than 64 levels"),
])
def test_jsonl_cases_refuse_what_json_cannot_carry(tmp_path: Path, row: str, reason: str) -> None:
    write(tmp_path, "rows.jsonl", '{"a": 1}\n' + row + "\n")
    path = write(tmp_path, "c.yaml", "cases: rows.jsonl\n" + CONVO)
    assert problems(cli("validate", str(path))) == [
        f"{path}:1:1: cases: cases file 'rows.jsonl': line 2: {reason}"]


def test_yaml_cases_file_refuses_nan(tmp_path: Path) -> None:
    write(tmp_path, "rows.yaml", "- {a: 1}\n- {a: .NaN}\n")
    path = write(tmp_path, "c.yaml", "cases: rows.yaml\n" + CONVO)
    assert problems(cli("validate", str(path))) == [
        f"{path}:1:1: cases: cases file 'rows.yaml': line 2: '.NaN' is not a finite number: "
        "JSON (what the API takes) cannot carry NaN or infinity (quote it to mean the text)"]


def test_a_template_that_computes_infinity_renders_text(tmp_path: Path) -> None:
    # templates only ever produce strings: `inf` is text the API can take
    assert Renderer(tmp_path).render_str("{{ 1e400 }} {{ 'nan'|float }}", {}) == "inf nan"


def _tool(responder: dict[str, Any], arguments: str, tmp_path: Path) -> tuple[str, str | None]:
    answer = answer_tool_call(
        ToolCall("call_1", "f", arguments), {"f": responder}, variables={},
        suite_dir=tmp_path, render=lambda value, scope: value,
    )
    return answer.content, answer.error


def test_tool_results_and_arguments_with_nan_become_tool_errors(tmp_path: Path) -> None:
    write(tmp_path, "hooks.py", "def nan(**kw):\n    return {'x': float('nan')}\n")
    content, error = _tool({"python": "hooks:nan"}, "{}", tmp_path)
    assert error == ("hooks:nan returned a value that is not JSON: "
                     "Out of range float values are not JSON compliant")
    assert json.loads(content) == {"error": error}  # what the model gets is strict JSON
    content, error = _tool({"result": "ok"}, '{"x": NaN}', tmp_path)
    assert error == "arguments are not valid JSON: NaN is not a JSON number"
    assert json.loads(content) == {"error": error}


def test_transcript_encoder_writes_non_finite_numbers_as_null() -> None:
    data = {"id": "x", "usage": {"prompt_tokens": math.nan}, "calls": [{"latency_ms": math.inf}]}
    assert json.loads(encode_json(data)) == {
        "id": "x", "usage": {"prompt_tokens": None}, "calls": [{"latency_ms": None}]}
    assert encode_json({"a": 1.5}) == b'{\n  "a": 1.5\n}\n'


# --- regular expressions -------------------------------------------------------------------

def test_regexes_outside_re2_are_refused_at_validate(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", CONVO + (
        "expect:\n"
        "  - {regex: '(a)\\1'}\n"
        "  - {regex: 'a(?=b)'}\n"
        "  - json_schema: {type: string, pattern: '(?<!x)y'}\n"
    ))
    hint = "(RE2 syntax: no backreferences, lookaround or \\Z) (conversation 'c')"
    assert problems(cli("validate", str(path))) == [
        f"{path}:5:13: expect[0].regex: invalid regular expression: "
        f"invalid escape sequence: \\1 {hint}",
        f"{path}:6:13: expect[1].regex: invalid regular expression: "
        f"invalid perl operator: (?= {hint}",
        f"{path}:7:18: expect[2].json_schema: invalid JSON Schema: pattern '(?<!x)y': "
        f"invalid perl operator: (?<! {hint}",
    ]


@pytest.mark.timeout(20)
def test_catastrophic_patterns_finish_against_a_long_reply(tmp_path: Path, api: Any) -> None:
    reply_var = "a" * 50_000
    path = write(tmp_path, "c.yaml", (
        f"model: glm-4-flash\nvars: {{x: {reply_var}}}\n"
        "messages:\n  - {role: user, content: '{{ x }}!'}\n"
        "expect:\n"
        "  - {regex: '(a+)+$'}\n"
        "  - json_schema: {type: object, patternProperties: {'(a|aa)+$': {}}}\n"
    ))
    started = time.process_time()
    result = cli("run", str(path), "--mock", "-o", str(tmp_path / "out"), "--no-progress")
    assert result.exit_code == 1, result.output  # both fail: the reply has a '!' at the end
    assert "expected reply to match /(a+)+$/" in result.output
    assert time.process_time() - started < 10


# --- template bombs ------------------------------------------------------------------------

TOO_LARGE = f"unsafe template: the result would be larger than {MAX_SIZE:,} characters or items"
TOO_LONG = "unsafe template: the template takes more than 1,000,000 steps"
TOO_BIG_INT = "unsafe template: the number would be larger than 14,000 bits"

BOMBS = [
    ("{{ 'x'|center(2000000000) }}", TOO_LARGE),
    ("{{ 'x'.ljust(2000000000) }}", TOO_LARGE),
    ("{{ '%2000000000d' % 1 }}", TOO_LARGE),
    ("{{ '%*d' % (2000000000, 1) }}", TOO_LARGE),
    ("{{ '%.2000000000f'|format(1.5) }}", TOO_LARGE),
    ("{{ '{:>2000000000}'.format(1) }}", TOO_LARGE),
    ("{{ '{:>{}}'.format(1, 2000000000) }}", TOO_LARGE),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
     "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", TOO_LARGE),
    ("{% set a = 'x' * 1500000 %}{% set a = a ~ a %}{% set a = a ~ a %}", TOO_LARGE),
    ("{% set a = ['x' * 1000000] * 2 %}{{ a|join }}", TOO_LARGE),
    ("{% set a = ['x' * 100000] * 5 %}{% set b = [a, a, a, a, a] %}{{ b }}", TOO_LARGE),
    ("{% set l = [1] %}{% for i in range(40) %}{{ l.extend(l) }}{% endfor %}", TOO_LARGE),
    ("{{ ('a' * 1000000)|replace('a', 'bbb') }}", TOO_LARGE),
    ("{{ ('a\\n' * 500000)|indent(100) }}", TOO_LARGE),
    ("{{ [1]|batch(2000000000, 'x')|list }}", TOO_LARGE),
    ("{{ lipsum(1000000000) }}", TOO_LARGE),
    ("{% macro m() %}{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}{% endmacro %}"
     "{{ m()|length }}", TOO_LARGE),
    ("{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}", TOO_LARGE),
    ("{{ ((10 ** 1000) ** 1000) ** 1000 }}", "unsafe template: the exponent is too large"),
    ("{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}"
     "{% endfor %}", TOO_BIG_INT),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     TOO_LONG),
    ("{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
     TOO_LONG),
    ("{{ [[1] * 1000] * 2000|sum(start=[]) }}", "unsafe template: sum() adds numbers only in "
                                               "templates"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("template", "reason"), BOMBS)
@pytest.mark.slow
def test_template_bombs_are_refused_while_they_are_built(
    tmp_path: Path, template: str, reason: str
) -> None:
    started = time.process_time()
    with pytest.raises(RenderError) as info:
        Renderer(tmp_path).render_str(template, {})
    assert info.value.reason == reason
    assert time.process_time() - started < 5


def test_templates_within_the_limits_still_work(tmp_path: Path) -> None:
    r = Renderer(tmp_path)
    assert r.render_str("{{ 'x'|center(5) }}|{{ '%05d' % 42 }}|{{ '{:>4}'.format(7) }}", {}) == (
        "  x  |00042|   7")
    assert r.render_str("{{ 10 ** 1000 > 1 }} {{ [1, 2, 3]|sum }} {{ range(3)|join('-') }}",
                        {}) == "True 6 0-1-2"
    assert len(r.render_str("{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}", {})) == (
        1_000_000)
    assert r.render_str("{% set ns = namespace(s='') %}{% for i in range(3) %}"
                        "{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.s }}", {}) == "012"


def test_a_template_bomb_is_an_input_error_at_validate(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", (
        "model: glm-4-flash\nmessages:\n"
        "  - {role: user, content: \"{{ 'x'|center(2000000000) }}\"}\n"))
    assert problems(cli("validate", str(path))) == [
        f"{path}:3:27: messages[0].content: {TOO_LARGE} (conversation 'c')"]


# --- unbounded plans and cases files -------------------------------------------------------

def test_repeat_is_bounded_by_the_schema(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "repeat: 1000000000\n" + CONVO)
    assert problems(cli("validate", str(path))) == [
        f"{path}:1:9: repeat: 1000000000 is greater than the maximum of 1000"]


def test_cases_times_repeat_is_bounded(tmp_path: Path) -> None:
    write(tmp_path, "rows.csv", "n\n" + "".join(f"{i}\n" for i in range(1000)))
    path = write(tmp_path, "c.yaml", "cases: rows.csv\nrepeat: 101\n" + CONVO)
    assert problems(cli("validate", str(path))) == [
        f"{path}:2:9: repeat: 1000 cases × repeat 101 is more than 100000 runs"]


@pytest.mark.timeout(20)
@pytest.mark.slow
def test_a_million_column_csv_is_refused_quickly(tmp_path: Path) -> None:
    write(tmp_path, "wide.csv", ",".join(f"c{i}" for i in range(1_000_000)) + "\n")
    write(tmp_path, "dupes.csv", ",".join(f"c{i}" for i in range(50_000)) + ",c7\n")
    path = write(tmp_path, "c.yaml", "conversations:\n  - {name: a, cases: wide.csv}\n"
                 "  - {name: b, cases: dupes.csv}\n" + CONVO)
    started = time.process_time()
    assert problems(cli("validate", str(path))) == [
        f"{path}:2:15: conversations[0].cases: cases file 'wide.csv': line 1: "
        "more than 100000 columns",
        f"{path}:3:15: conversations[1].cases: cases file 'dupes.csv': line 1: "
        "duplicate column 'c7'",
    ]
    assert time.process_time() - started < 5


def test_csv_cells_are_bounded_like_yaml_values(tmp_path: Path) -> None:
    write(tmp_path, "rows.csv", "a,b\n" + "1,2\n" * 60_000)
    path = write(tmp_path, "c.yaml", "cases: rows.csv\n" + CONVO)
    assert problems(cli("validate", str(path))) == [
        f"{path}:1:1: cases: cases file 'rows.csv': line 50002: more than 100000 values"]


# --- files and folders ---------------------------------------------------------------------

@pytest.mark.timeout(20)
def test_a_fifo_named_yaml_is_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "suite").mkdir()
    write(tmp_path / "suite", "ok.yaml", CONVO)
    os.mkfifo(tmp_path / "suite" / "pipe.yaml")
    for target in ("suite", "suite/pipe.yaml"):
        assert problems(cli("validate", str(tmp_path / target))) == [
            f"{tmp_path / 'suite' / 'pipe.yaml'}: not a regular file (a FIFO)"]
    result = cli("run", str(tmp_path / "suite"), "--dry-run")
    assert result.exit_code == 2
    assert "pipe.yaml: not a regular file (a FIFO)" in result.output


def test_an_unreadable_sub_folder_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "suite" / "locked").mkdir(parents=True)
    write(tmp_path / "suite", "ok.yaml", CONVO)
    write(tmp_path / "suite" / "locked", "hidden.yaml", CONVO)
    locked = tmp_path / "suite" / "locked"
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads any folder: fail its listing the way the kernel would
        real = os.scandir

        def scandir(path: Any = ".") -> Any:
            if os.fspath(path) == os.fspath(locked):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        assert problems(cli("validate", str(tmp_path / "suite"))) == [
            f"error: {tmp_path / 'suite'}: cannot read folder {locked}: Permission denied"]
        result = cli("run", str(tmp_path / "suite"), "--dry-run")
        assert result.exit_code == 2
        assert f"cannot read folder {locked}: Permission denied" in result.output
    finally:
        locked.chmod(0o755)


def test_a_long_name_gets_stable_short_ids_and_its_transcripts(tmp_path: Path, api: Any) -> None:
    long = "名" * 300
    path = write(tmp_path, "c.yaml", f"name: {long}\ncases: [{{a: 1}}, {{a: 2}}]\nrepeat: 2\n"
                 + CONVO)
    ids = [plan.id for plan in plan_runs([load_file(path)])]
    assert ids == [plan.id for plan in plan_runs([load_file(path)])]  # the same every run
    assert len(set(ids)) == 4
    for run_id in ids:
        assert len(run_id.encode()) <= MAX_ID_BYTES
        assert re.fullmatch(f"c--{'名' * ((MAX_ID_BYTES - 16) // 3)}~[0-9a-f]{{12}}", run_id)
    out = tmp_path / "out"
    result = cli("run", str(path), "--mock", "-o", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(f"{i}.{ext}" for i in ids for ext in ("json", "md")), "run.json"])
    assert json.loads((out / f"{ids[0]}.json").read_text(encoding="utf-8"))["name"] == long
    again = cli("run", str(path), "--mock", "-o", str(out), "--no-progress", "--resume")
    assert again.exit_code == 0, again.output
    assert again.output.startswith("resuming: 4 of 4 conversations already done\n")


def test_a_regex_inside_json_path_is_refused_at_validate(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", CONVO + (
        "expect:\n"
        "  - {json_path: '$.a[?(@.b =~ \"(a+)+$\")]'}\n"
        "  - {json_path: '$.a.`sub(/(a+)+$/, b)`'}\n"
        "  - {json_path: '$.a[0].b', value: 1}\n"
    ))
    reason = ("invalid JSON path: a regex inside json_path (=~, sub()) is not supported: "
              "jsonpath-ng runs it with Python's backtracking re; check the value with regex: "
              "(conversation 'c')")
    assert problems(cli("validate", str(path))) == [
        f"{path}:5:17: expect[0].json_path: {reason}",
        f"{path}:6:17: expect[1].json_path: {reason}",
    ]
