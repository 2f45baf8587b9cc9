"""Malformed conversation files: each is reported once, at the right place, with a clear reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from glmrun.errors import Problem, SpecError
from glmrun.load.spec import load_file
from glmrun.plan.checking import validate_paths

BAD = Path(__file__).parent / "bad"

# file, line, column, path, reason (exact) — or reason fragment for PyYAML's own messages (`~`)
CASES: list[tuple[str, int, int, str, str]] = [
    # YAML syntax (libyaml's wording; `~` marks a fragment)
    ("syntax_bad_indent", 5, 4, "", "~did not find expected '-' indicator"),
    ("syntax_unclosed_quote", 7, 1, "", "~while scanning a quoted scalar at line 4"),
    ("syntax_tab_indent", 3, 1, "", "~cannot start any token"),
    ("syntax_mapping_value", 4, 18, "", "~mapping values are not allowed"),
    ("duplicate_key", 4, 3, "params.temperature",
     "duplicate key 'temperature' (first defined at line 3)"),
    ("two_documents", 4, 1, "",
     "expected a single document in the stream, found another document"),
    ("undefined_alias", 3, 5, "", "found undefined alias 'first'"),
    ("python_tag", 4, 14, "", "unsupported tag '!!python/object/apply:os.system'"),
    ("top_level_list", 1, 1, "",
     "the top level must be an object (name, model, messages, ...), not an array"),
    ("empty", 1, 1, "", "the file is empty"),
    ("alias_bomb", 8, 10, "",
     "document too large: more than 100000 values (after expanding aliases)"),
    # schema: wrong types and values
    ("temperature_string", 3, 16, "params.temperature", "'hot' is not of type 'number'"),
    ("max_tokens_negative", 2, 22, "params.max_tokens", "-1 is less than the minimum of 1"),
    ("messages_string", 2, 11, "messages", "'hello there' is not of type 'array'"),
    ("role_usr", 5, 11, "messages[1].role",
     "'usr' is not one of ['system', 'user', 'assistant', 'tool']"),
    ("missing_content", 5, 5, "messages[1]", "'content' is a required property"),
    ("mode_enum", 2, 7, "mode", "'fast' is not one of ['sync', 'stream', 'async', 'batch']"),
    ("stop_two", 3, 9, "params.stop",
     "['\\n', 'END'] is too long (Zhipu accepts at most one stop sequence)"),
    ("expectation_two_kinds", 5, 5, "expect[0]",
     "an expectation takes exactly one of its kinds; found 'contains' and 'regex'"),
    ("respond_two_kinds", 6, 7, "params.tools[0].respond",
     "respond takes exactly one of its kinds; found 'result' and 'python'"),
    ("model_missing_in_conversation", 6, 5, "conversations[1]",
     "'model' is a required property (none is set at the top of the file)"),
    # schema: unknown keys at several levels
    ("unknown_key_top", 1, 1, "modle", "unknown key 'modle' (did you mean 'model'?)"),
    ("unknown_key_params", 3, 3, "params.tempreature",
     "unknown key 'tempreature' (did you mean 'temperature'?)"),
    ("unknown_key_message", 5, 5, "messages[0].nmae", "unknown key 'nmae' (did you mean 'name'?)"),
    ("unknown_key_expectation", 5, 5, "expect[0].contians",
     "unknown key 'contians' (did you mean 'contains'?)"),
    ("unknown_key_conversation", 6, 5, "conversations[0].parms",
     "unknown key 'parms' (did you mean 'params'?)"),
    # beyond the schema
    ("duplicate_conversation_names", 7, 11, "conversations[2].name",
     "duplicate conversation name 'greet' (first at line 5)"),
    ("cases_missing", 4, 1, "cases", "cases file '_data/nowhere.csv': not found"),
    ("cases_bad_csv", 4, 1, "cases",
     "cases file '_data/bad.csv': line 3: more fields than the header has"),
    ("cases_bad_jsonl", 4, 1, "cases",
     "cases file '_data/bad.jsonl': line 2: invalid JSON: "
     "Expecting property name enclosed in double quotes (column 16)"),
    ("cases_bad_yaml", 4, 1, "cases",
     "cases file '_data/bad_cases.yaml': line 2: item 1 is a string, expected an object"),
    # templates
    ("undefined_in_message", 7, 14, "messages[1].content",
     "undefined variable 'usr' (conversation 'undefined_in_message')"),
    ("undefined_in_turn", 6, 5, "turns[0]",
     "undefined variable 'topic' (conversation 'undefined_in_turn')"),
    ("undefined_in_expect", 6, 15, "expect[0].contains",
     "undefined variable 'name' (conversation 'undefined_in_expect')"),
    ("undefined_in_params", 3, 12, "params.user_id",
     "undefined variable 'uid' (conversation 'undefined_in_params')"),
    ("include_dotdot", 4, 14, "messages[0].content",
     "include '../conftest.py' escapes the suite folder (conversation 'include_dotdot')"),
    ("include_absolute", 4, 14, "messages[0].content",
     "include '/etc/hostname' escapes the suite folder (conversation 'include_absolute')"),
    ("include_missing", 4, 14, "messages[0].content",
     "include '_prompts/nope.md' not found in the suite folder "
     "(conversation 'include_missing')"),
    ("template_syntax", 4, 14, "messages[0].content",
     "template syntax error (line 2): unexpected '}' (conversation 'template_syntax')"),
    ("invalid_regex", 5, 12, "expect[0].regex",
     "invalid regular expression: missing ): ([a-z]+ "
     "(conversation 'invalid_regex')"),
    # local images
    ("image_escape", 7, 26, "messages[0].content[1].image_url.url",
     "image '../conftest.png' is outside the suite folder (conversation 'image_escape')"),
    ("image_missing", 7, 26, "messages[0].content[1].image_url.url",
     "image '_data/missing.png' not found (conversation 'image_missing')"),
    ("image_not_image", 7, 26, "messages[0].content[1].image_url.url",
     "image '_data/not_an_image.png' is not an image glmrun knows: Zhipu takes JPEG and PNG "
     "images only "
     "(conversation 'image_not_image')"),
]


def only_problem(path: Path) -> Problem:
    problems = validate_paths([path])
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


@pytest.mark.parametrize(("name", "line", "column", "where", "reason"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_file(name: str, line: int, column: int, where: str, reason: str) -> None:
    problem = only_problem(BAD / f"{name}.yaml")
    assert Path(problem.file).name == f"{name}.yaml"
    assert (problem.line, problem.column, problem.path) == (line, column, where)
    if reason.startswith("~"):
        assert reason[1:] in problem.reason
    else:
        assert problem.reason == reason


def test_every_fixture_is_covered() -> None:
    listed = {c[0] for c in CASES} | {"three_errors"}
    assert {p.stem for p in BAD.glob("*.yaml")} == listed


def test_three_independent_errors_are_all_reported() -> None:
    problems = validate_paths([BAD / "three_errors.yaml"])
    assert [(p.line, p.path, p.reason) for p in problems] == [
        (2, "mode", "'fast' is not one of ['sync', 'stream', 'async', 'batch']"),
        (4, "params.temperature", "1.5 is greater than the maximum of 1"),
        (6, "messages[0].role", "'usr' is not one of ['system', 'user', 'assistant', 'tool']"),
    ]


def test_load_file_raises_spec_error_with_every_problem() -> None:
    with pytest.raises(SpecError) as info:
        load_file(BAD / "three_errors.yaml")
    assert len(info.value.problems) == 3
    assert str(info.value).splitlines()[0].endswith(
        "three_errors.yaml:2:7: mode: 'fast' is not one of ['sync', 'stream', 'async', 'batch']"
    )


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"model: glm-4-flash\nmessages:\n  - {role: user, content: caf\xe9}\n")
    problem = only_problem(path)
    assert (problem.line, problem.column) == (3, 30)
    assert problem.reason == "not UTF-8: byte 0xe9 cannot be decoded"


def test_nesting_depth_10000(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("model: glm-4-flash\nvars:\n  x: " + "[" * 10_000 + "]" * 10_000 + "\n")
    problem = only_problem(path)
    assert problem.line == 3
    assert "nesting" in problem.reason or "depth" in problem.reason


def test_block_nesting_is_capped_at_64(tmp_path: Path) -> None:
    path = tmp_path / "deep_block.yaml"
    lines = ["model: glm-4-flash", "vars:"] + [f"{'  ' * i}k{i}:" for i in range(1, 80)]
    path.write_text("\n".join(lines) + " 1\n")
    problem = only_problem(path)
    assert problem.reason == "nesting deeper than 64 levels"
    assert problem.line == 66  # the document is level 1, vars level 2 (line 3), ... 65 (line 66)


def test_50_mb_string_is_rejected_fast(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as fh:
        fh.write('model: glm-4-flash\nmessages:\n  - role: user\n    content: "')
        fh.write("x" * (50 * 1024 * 1024))
        fh.write('"\n')
    start = time.process_time()
    problem = only_problem(path)
    assert time.process_time() - start < 2.0
    assert (problem.line, problem.reason) == (None, "file is larger than 10 MB")


def test_image_larger_than_5_mb(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (5 * 1024 * 1024))
    path = tmp_path / "vision.yaml"
    path.write_text(
        "model: glm-4v-flash\nmessages:\n  - role: user\n    content:\n"
        "      - {type: image_url, image_url: {url: big.png}}\n"
    )
    problem = only_problem(path)
    assert (problem.line, problem.column) == (5, 44)
    assert problem.path == "messages[0].content[0].image_url.url"
    assert problem.reason.startswith("image 'big.png' is larger than 5 MB")


def test_image_symlink_escaping_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\n")
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "link.png").symlink_to(outside)
    path = suite / "vision.yaml"
    path.write_text(
        "model: glm-4v-flash\nmessages:\n  - role: user\n    content:\n"
        "      - {type: image_url, image_url: {url: link.png}}\n"
    )
    assert "is outside the suite folder" in only_problem(path).reason


def test_missing_path_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    problem = only_problem(tmp_path / "nope.yaml")
    assert problem.reason == "no such file or directory"
