"""Property test over generated hostile conversation files (issue 10): whatever the YAML and
template surface holds, `validate` and `--dry-run` end with exit 0 or 2 (`--mock` with 0, 1 or
2) and never a traceback, within a time bound; a handful of known bombs also run in a child
process under an address-space limit, for the memory bound."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glmrun.cli.main import main

HOSTILE_SCALARS = [
    ".nan", "-.inf", ".Inf", "1.0e+400", "NaN", "1" * 5000, "0x" + "f" * 5000, "~", "!!binary AA==",
    "!!python/object/apply:os.system ['true']", "*undefined", "&a [*a]", "'''", "{{", "{% for %}",
    "{{ 'x'|center(2000000000) }}", "{{ '%2000000000d' % 1 }}", "{{ '{:>2000000000}'.format(1) }}",
    "{{ 10 ** 10 ** 10 }}", "{{ lipsum(1000000000) }}", "{{ range(10**9)|list }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "{{ ''.__class__.__mro__ }}",
    "{% include '../../etc/passwd' %}", "{% include '/dev/zero' %}", "{{ undefined_name }}",
    "{{ [1]|batch(2000000000, 0)|list }}", "{{ 1 // 0 }}", "{{ 1e400 }}", "\x00", "\udcff",
    "(a+)+$", "(a)\\1", "(?=x)", "[", "a{1000}{1000}",
]

scalar = st.one_of(
    st.sampled_from(HOSTILE_SCALARS),
    st.text(max_size=30),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b", "role", "content", "id", "x y"]), inner,
                        max_size=4),
    ),
    max_leaves=12,
)
# mostly well-formed around one hostile spot, so that generated files get past the schema to
# the templates, the cases and the run
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user"] * 6 + ["system", "assistant", "usr"]),
     "content": st.one_of(st.sampled_from(HOSTILE_SCALARS), st.text(max_size=20))},
)
expectation = st.one_of(
    st.fixed_dictionaries({"regex": st.sampled_from(HOSTILE_SCALARS), "flags": st.sampled_from(
        ["", "i", "ms", "q"])}),
    st.fixed_dictionaries({"contains": st.sampled_from(HOSTILE_SCALARS)}),
    st.fixed_dictionaries({"json_schema": st.fixed_dictionaries(
        {"type": st.just("string"), "pattern": st.sampled_from(HOSTILE_SCALARS)})}),
    st.fixed_dictionaries({"json_path": st.sampled_from(
        ["$.a", "$[?(@.a =~ 'x')]", "$..[[", "$.a.`sub(/a/, b)`"]), "value": value}),
    st.fixed_dictionaries({"max_tokens": st.integers(min_value=-5, max_value=10**20)}),
)
conversation_file = st.fixed_dictionaries(
    {"model": st.sampled_from(["glm-4-flash"] * 9 + ["{{ 'x'|center(2000000000) }}"]),
     "messages": st.lists(message, min_size=1, max_size=2)},
    optional={
        "name": st.one_of(st.text(min_size=1, max_size=400), st.sampled_from(HOSTILE_SCALARS)),
        "vars": st.dictionaries(st.sampled_from(["a", "b", "user"]), value, min_size=1,
                                max_size=3),
        "turns": st.lists(st.one_of(st.sampled_from(HOSTILE_SCALARS), st.text(max_size=10)),
                          max_size=2),
        "expect": st.lists(expectation, max_size=3),
        "cases": st.one_of(st.lists(st.dictionaries(st.sampled_from(["a", "id"]), value,
                                                    max_size=2), max_size=3),
                           st.sampled_from(["rows.csv", "rows.jsonl", "pipe.yaml", "../x.csv"])),
        "repeat": st.one_of(st.integers(min_value=-1, max_value=10**12), st.just(3)),
        "max_tool_rounds": st.integers(min_value=0, max_value=10**9),
        "params": st.fixed_dictionaries({}, optional={
            "temperature": st.floats(allow_nan=True, allow_infinity=True),
            "max_tokens": st.integers(min_value=-1, max_value=10**12),
            "extra_body": st.dictionaries(st.sampled_from(["k", "penalty"]), value, max_size=2),
        }),
    },
)


def _dump(data: dict[str, Any]) -> str:
    """YAML text of `data`, with some values spliced in raw (tags, anchors, special floats)."""
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    return text.replace("'.nan'", ".nan").replace("'1.0e+400'", "1.0e+400").replace(
        "'&a [*a]'", "&a [*a]").replace("'*undefined'", "*undefined")


def _write_suite(folder: Path, text: str) -> Path:
    (folder / "rows.csv").write_text("a,a\n1,2\n", encoding="utf-8")
    (folder / "rows.jsonl").write_text('{"a": NaN}\n', encoding="utf-8")
    if not (folder / "pipe.yaml").exists():
        os.mkfifo(folder / "pipe.yaml")
    path = folder / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


MAX_RSS_KB = 1024 * 1024  # this test process never grows past 1 GB (ru_maxrss only grows)


def _check(result: Result, allowed: set[int]) -> None:
    assert result.exit_code in allowed, result.output
    assert isinstance(result.exception, (SystemExit, type(None))), repr(result.exception)
    assert "Traceback" not in result.output
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < MAX_RSS_KB


def _in_process(folder: Path, text: str, *, mock: bool) -> None:
    path = _write_suite(folder, text)
    runner = CliRunner()
    _check(runner.invoke(main, ["validate", str(path)]), {0, 2})
    _check(runner.invoke(main, ["run", str(path), "--dry-run", "-o", str(folder / "out")]),
           {0, 2})
    if mock:
        _check(runner.invoke(main, ["run", str(path), "--mock", "--no-progress", "-o",
                                    str(folder / "out"), "--retries", "0"]), {0, 1, 2})


FUZZ = settings(max_examples=40, deadline=15_000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.timeout(300)
@FUZZ
@given(conversation_file)
@pytest.mark.slow
def test_generated_conversation_files_validate_and_dry_run_cleanly(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        _in_process(Path(folder), _dump(data), mock=False)


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=20)
@given(conversation_file)
@pytest.mark.slow
def test_generated_conversation_files_run_against_the_emulator_cleanly(
    data: dict[str, Any],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        _in_process(Path(folder), _dump(data), mock=True)


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=40)
@given(st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["a: ", "- ", "&x ", "*x ", "[", "]", "{", "}", ": ", "\n", "  ",
                              "!!str ", "? ", "|", ">", "'", '"', "#", "<<: *x\n", "{{ x }}",
                              "messages:\n", "model: m\n", ".nan", "\t"]),
             max_size=40).map("".join),
))
def test_generated_yaml_text_validates_cleanly(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = _write_suite(Path(folder), text)
        _check(CliRunner().invoke(main, ["validate", str(path)]), {0, 2})


# --- known bombs, each in a child process under a memory limit --------------------------------

LIMIT_BYTES = 1536 * 1024 * 1024  # address space: Python, the SDK's imports and thread stacks
CONVO = "model: glm-4-flash\nmessages:\n  - {role: user, content: %s}\n"

KNOWN_BOMBS = [
    ("center", CONVO % "\"{{ 'x'|center(2000000000) }}\"", "characters or items"),
    ("percent", CONVO % "\"{{ '%2000000000d' % 1 }}\"", "characters or items"),
    ("doubling", CONVO % ("\"{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
                          "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}\""),
     "characters or items"),
    ("loops", CONVO % ("\"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                       "{% endfor %}\""), "1,000,000 steps"),
    ("power", CONVO % "\"{{ ((10 ** 1000) ** 1000) ** 1000 }}\"", "exponent is too large"),
    ("repeat", "repeat: 1000000000\n" + CONVO % "hi", "greater than the maximum of 1000"),
    ("laughs", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)) + CONVO % "hi",
     "more than 100000 values"),
    ("wide_csv", "cases: wide.csv\n" + CONVO % "hi", "more than 100000 columns"),
]


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


CHILD = """
import json, sys, time
from click.testing import CliRunner
from glmrun.cli.main import main
for path in sys.argv[1:]:
    for command in (["validate"], ["run", "--dry-run"]):
        started = time.perf_counter()
        result = CliRunner().invoke(main, [*command, path])
        print(json.dumps({"file": path, "command": command, "code": result.exit_code,
                          "seconds": time.perf_counter() - started, "output": result.output,
                          "exception": repr(result.exception)}), flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_known_bombs_end_as_input_errors_within_memory_and_time(tmp_path: Path) -> None:
    # one child process under an address-space limit runs them all (a process each would
    # spend most of the time importing); a bomb that got through would kill it
    (tmp_path / "wide.csv").write_text(",".join(f"c{i}" for i in range(1_000_000)) + "\n",
                                       encoding="utf-8")
    paths = []
    for name, text, _reason in KNOWN_BOMBS:
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
        paths.append(str(tmp_path / f"{name}.yaml"))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *paths], cwd=tmp_path, capture_output=True, text=True,
        timeout=90, preexec_fn=_limited, check=False,
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(Path(r["file"]).stem, r["command"][0]) for r in results] == [
        (name, command) for name, _text, _reason in KNOWN_BOMBS for command in ("validate", "run")]
    for result, (name, _text, reason) in zip(results[::2] + results[1::2],
                                             KNOWN_BOMBS + KNOWN_BOMBS, strict=True):
        assert result["code"] == 2, (name, result)
        assert result["exception"] == "SystemExit(2)", (name, result)
        assert reason in result["output"], (name, result)
        assert result["seconds"] < 10, (name, result)


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_a_catastrophic_regex_against_a_long_reply_ends_within_memory_and_time(
    tmp_path: Path,
) -> None:
    long = "a" * 100_000
    path = tmp_path / "regex.yaml"
    path.write_text(f"model: glm-4-flash\nvars: {{x: {long}}}\n"
                    "messages:\n  - {role: user, content: '{{ x }}!'}\n"
                    "expect:\n  - {regex: '(a+)+$'}\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "glmrun", "run", str(path), "--mock", "--no-progress", "-o",
         str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        preexec_fn=_limited, check=False,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)  # a failed expectation, in time
    assert "expected reply to match /(a+)+$/" in done.stdout


# --- jsonschema-rs, the quick check of a valid file, never takes what jsonschema refuses ---

REPO = Path(__file__).parent.parent
anything = st.recursive(
    scalar | st.binary(max_size=3) | st.dates() | st.tuples(st.integers()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["model", "messages", "role", "content", "name", "params", "cases",
                         "expect", "turns", "tools", "mode", "vars", "id", "include"])
        | st.integers(), inner, max_size=5),
    max_leaves=15,
)


def _jsonschema_errors(data: Any, schema: str = "convo") -> list[str]:
    import jsonschema

    from glmrun.load.schema import load_schema

    validator = jsonschema.Draft202012Validator(load_schema(schema))
    return [e.message for e in validator.iter_errors(data)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(conversation_file, anything, st.fixed_dictionaries(
    {"model": st.just("glm-4-flash"), "messages": st.lists(message, min_size=1, max_size=2)},
    optional={"name": anything, "params": anything, "cases": anything, "expect": anything,
              "turns": anything, "mode": anything, "models": anything})))
def test_the_quick_schema_check_never_passes_what_jsonschema_refuses(data: Any) -> None:
    from glmrun.load.schema import surely_valid

    if surely_valid(data):
        assert _jsonschema_errors(data) == []


def test_every_conversation_file_here_gets_the_same_verdict_from_both_validators() -> None:
    """Every YAML file of the repository (examples, the tutorial, the hostile fixtures), read
    as glmrun reads it: a valid one is valid to both (so the quick check is what runs), an
    invalid one is never passed by jsonschema-rs."""
    from glmrun.load.schema import surely_valid
    from glmrun.load.yamlfile import load_yaml_file

    verdicts = {"both valid": 0, "both invalid": 0, "left to jsonschema": 0}
    for path in sorted(REPO.glob("**/*.y*ml")):
        if ".venv" in path.parts or ".git" in path.parts or path.suffix not in (".yaml", ".yml"):
            continue
        try:
            data = load_yaml_file(path, path.name)[1].data
        except Exception:  # not YAML glmrun reads (a workflow, a hostile fixture)
            continue
        if not isinstance(data, dict):
            continue
        problems = _jsonschema_errors(data)
        quick = surely_valid(data)
        assert not (quick and problems), (path, problems)
        verdicts["both valid" if quick else "both invalid" if problems
                 else "left to jsonschema"] += 1
    assert verdicts["both valid"] >= 10 and verdicts["both invalid"] >= 3, verdicts
    assert verdicts["left to jsonschema"] == 0, verdicts


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["sdk", "region", "out", "concurrency", "allow_hosts",
                                        "formats", "timeout", "paths", "x"]), anything,
                       max_size=4))
def test_the_quick_check_of_the_project_table_never_passes_what_jsonschema_refuses(
    table: dict[Any, Any],
) -> None:
    from glmrun.load.schema import surely_valid

    if surely_valid(table, "project"):
        assert _jsonschema_errors(table, "project") == []


def test_a_valid_file_is_loaded_without_importing_jsonschema(tmp_path: Path) -> None:
    """The point of the quick check: validating (and running) a valid file never loads
    jsonschema (≈0.09 s of startup); an invalid one does, for its explained errors."""
    code = ("import sys; from pathlib import Path; from glmrun.load.spec import check_file; "
            "r = check_file(Path(sys.argv[1])); "
            "print(len(r.problems), 'jsonschema' in sys.modules)")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: glm-4-flash\nmesages: []\n", encoding="utf-8")
    runs = [subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True,
                           text=True, check=True).stdout.split()
            for p in (REPO / "convos" / "greeting.yaml", bad)]
    assert runs == [["0", "False"], [runs[1][0], "True"]] and int(runs[1][0]) >= 1
