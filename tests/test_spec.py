"""Loading conversation files: positions, merge rules, cases files, discovery, the schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from glmrun.errors import InputError, SpecError, YamlLoadError, display_path
from glmrun.load.schema import load_schema
from glmrun.load.spec import discover, load_file, source_path
from glmrun.load.yamlfile import load_yaml


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


SUITE = """\
model: glm-4-flash
mode: stream
params: {temperature: 0.7, max_tokens: 100}
vars: {user: Ann, lang: en}
tags: [smoke]
messages:
  - {role: system, content: Be brief.}
  - {role: user, content: "hi {{ user }}"}
expect:
  - {not_contains: sorry}
conversations:
  - name: inherits
  - name: overrides
    model: glm-4-plus
    mode: sync
    params: {temperature: 0.1}
    vars: {lang: fr}
    messages:
      - {role: user, content: bonjour}
    turns: [encore, {content: et puis?, expect: [{contains: puis}]}]
    expect: [{contains: bonjour}]
    tags: [fr, smoke]
    repeat: 3
    pass_rate: 0.5
"""


# -- YAML with positions --------------------------------------------------------------------

def test_positions_of_keys_values_and_items() -> None:
    doc = load_yaml("a: 1\nb:\n  - x\n  - {c: 2}\n", "f.yaml")
    assert doc.data == {"a": 1, "b": ["x", {"c": 2}]}
    assert doc.source.values[("a",)] == (1, 4)
    assert doc.source.keys[("b",)] == (2, 1)
    assert doc.source.values[("b", 0)] == (3, 5)
    assert doc.source.keys[("b", 1, "c")] == (4, 6)
    assert doc.source.values[("b", 1, "c")] == (4, 9)
    assert doc.source.where(("b", 1, "c", "deeper")) == (4, 9)  # nearest known ancestor


@pytest.mark.parametrize("text", [
    "a: 1\nb: 2.5\nc: true\nd: ~\ne: '3'\nf: 2024-01-02\ng: 0x1f\nh: [1, {i: j}]\n",
    "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n",
    "list: &l [1, 2]\nagain: *l\nk: !!str 12\n",
    "multi: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
])
def test_same_values_as_safe_load(text: str) -> None:
    assert load_yaml(text, "f.yaml").data == yaml.safe_load(text)


def test_duplicate_keys_are_reported_with_both_lines() -> None:
    doc = load_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert [(p.line, p.column, p.path, p.reason) for p in doc.problems] == [
        (3, 1, "a", "duplicate key 'a' (first defined at line 1)")
    ]


def test_syntax_error_carries_the_mark() -> None:
    with pytest.raises(YamlLoadError) as info:
        load_yaml("a: 1\nb: [1, 2\n", "f.yaml")
    assert info.value.problem.line == 3
    assert "flow sequence" in info.value.problem.reason


def test_display_path() -> None:
    assert display_path(("conversations", 0, "params", "temperature")) == (
        "conversations[0].params.temperature"
    )
    assert display_path(("vars", "a b", 2)) == 'vars["a b"][2]'
    assert display_path(()) == ""


# -- merging --------------------------------------------------------------------------------

def test_single_conversation_file_defaults_name_to_stem(tmp_path: Path) -> None:
    text = "model: glm-4-flash\nmessages:\n  - {role: user, content: hi}\n"
    path = write(tmp_path / "greeting.yaml", text)
    suite = load_file(path)
    (conv,) = suite.conversations
    assert conv.name == "greeting"
    assert (conv.mode, conv.repeat, conv.pass_rate, conv.max_tool_rounds) == ("sync", 1, 1.0, 8)
    assert conv.messages == ({"role": "user", "content": "hi"},)
    assert suite.sha256 == conv.file_sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert conv.file == path.absolute()


def test_name_key_overrides_stem(tmp_path: Path) -> None:
    text = "name: hello\nmodel: m\nmessages: [{role: user, content: x}]\n"
    path = write(tmp_path / "g.yaml", text)
    assert load_file(path).conversations[0].name == "hello"


def test_conversation_inherits_file_settings(tmp_path: Path) -> None:
    inherits, _ = load_file(write(tmp_path / "s.yaml", SUITE)).conversations
    assert inherits.model == "glm-4-flash"
    assert inherits.mode == "stream"
    assert inherits.params == {"temperature": 0.7, "max_tokens": 100}
    assert inherits.vars == {"user": "Ann", "lang": "en"}
    assert [m["content"] for m in inherits.messages] == ["Be brief.", "hi {{ user }}"]
    assert inherits.expect == ({"not_contains": "sorry"},)
    assert inherits.tags == ("smoke",)


def test_conversation_overrides_by_the_merge_rules(tmp_path: Path) -> None:
    _, conv = load_file(write(tmp_path / "s.yaml", SUITE)).conversations
    assert (conv.model, conv.mode, conv.repeat, conv.pass_rate) == ("glm-4-plus", "sync", 3, 0.5)
    assert conv.params == {"temperature": 0.1, "max_tokens": 100}  # shallow merge
    assert conv.vars == {"user": "Ann", "lang": "fr"}
    assert conv.messages == ({"role": "user", "content": "bonjour"},)  # replaced
    assert conv.expect == ({"not_contains": "sorry"}, {"contains": "bonjour"})  # appended
    assert conv.tags == ("smoke", "fr")  # union, in order
    assert [(t.content, t.expect) for t in conv.turns] == [
        ("encore", ()), ("et puis?", ({"contains": "puis"},)),
    ]
    assert conv.turns[1].at is not None and conv.turns[1].at.line == 20


def test_origins_point_into_the_file(tmp_path: Path) -> None:
    inherits, conv = load_file(write(tmp_path / "s.yaml", SUITE)).conversations
    assert source_path(conv, ("expect", 0, "not_contains")) == ("expect", 0, "not_contains")
    assert source_path(conv, ("expect", 1, "contains")) == (
        "conversations", 1, "expect", 0, "contains"
    )
    assert source_path(conv, ("params", "temperature")) == (
        "conversations", 1, "params", "temperature"
    )
    assert source_path(conv, ("params", "max_tokens")) == ("params", "max_tokens")
    assert source_path(conv, ("messages", 0, "content")) == (
        "conversations", 1, "messages", 0, "content"
    )
    assert source_path(inherits, ("messages", 1, "content")) == ("messages", 1, "content")


def test_conversation_names_must_be_given_in_a_suite(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "model: m\nmessages: [{role: user, content: x}]\n"
                                      "conversations:\n  - model: other\n")
    with pytest.raises(SpecError) as info:
        load_file(path)
    assert [(p.line, p.reason) for p in info.value.problems] == [
        (4, "'name' is a required property")
    ]


def test_messages_required_somewhere(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "model: m\nconversations:\n  - name: a\n")
    with pytest.raises(SpecError) as info:
        load_file(path)
    assert [(p.path, p.reason) for p in info.value.problems] == [
        ("conversations[0]",
         "'messages' is a required property (none is set at the top of the file)")
    ]


def test_duplicate_function_names_in_tools(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", """\
model: m
messages: [{role: user, content: x}]
params:
  tools:
    - {type: function, function: {name: f}}
    - {type: function, function: {name: f}}
""")
    with pytest.raises(SpecError) as info:
        load_file(path)
    assert [(p.line, p.path, p.reason) for p in info.value.problems] == [
        (6, "params.tools[1].function.name", "duplicate function name 'f'")
    ]


# -- cases ----------------------------------------------------------------------------------

CASES_FILE = "model: m\nmessages: [{role: user, content: '{{ q }}'}]\ncases: {ref}\n"


@pytest.mark.parametrize(("name", "content", "rows"), [
    ("rows.csv", "\ufeffq,n\nhello,1\n\"a, b\",2\n", [{"q": "hello", "n": "1"},
                                                   {"q": "a, b", "n": "2"}]),
    ("rows.jsonl", '{"q": "hello", "n": 1}\n\n{"q": "x", "n": [2]}\n', [{"q": "hello", "n": 1},
                                                                       {"q": "x", "n": [2]}]),
    ("rows.yaml", "- {q: hello, n: 1}\n- q: x\n  n: 2\n", [{"q": "hello", "n": 1},
                                                       {"q": "x", "n": 2}]),
    ("rows.yml", "- {q: only}\n", [{"q": "only"}]),
])
def test_cases_files(tmp_path: Path, name: str, content: str, rows: list[dict[str, Any]]) -> None:
    write(tmp_path / "_data" / name, content)
    path = write(tmp_path / "c.yaml", CASES_FILE.replace("{ref}", f"_data/{name}"))
    (conv,) = load_file(path).conversations
    assert [dict(r) for r in conv.cases] == rows


def test_inline_cases(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", CASES_FILE.replace("{ref}", "[{q: a}, {q: b}]"))
    assert load_file(path).conversations[0].cases == ({"q": "a"}, {"q": "b"})


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("e.csv", "", "cases file 'e.csv': no header row"),
    ("e.csv", "q\n", "cases file 'e.csv' has no rows"),
    ("e.csv", "q,n\nx\n", "cases file 'e.csv': line 2: fewer fields than the header has"),
    ("e.csv", "q,q\nx,y\n", "cases file 'e.csv': line 1: duplicate column 'q'"),
    ("e.jsonl", "[1]\n", "cases file 'e.jsonl': line 1: expected a JSON object, found an array"),
    ("e.yaml", "a: 1\n", "cases file 'e.yaml': expected an array of objects, found an object"),
    ("e.yaml", "- a: [\n", "cases file 'e.yaml': line 2: "),
])
def test_bad_cases_files(tmp_path: Path, name: str, content: str, reason: str) -> None:
    write(tmp_path / name, content)
    path = write(tmp_path / "c.yaml", CASES_FILE.replace("{ref}", name))
    with pytest.raises(SpecError) as info:
        load_file(path)
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.path) == (3, 1, "cases")
    assert problem.reason.startswith(reason)


def test_cases_path_must_have_a_known_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", CASES_FILE.replace("{ref}", "rows.txt"))
    with pytest.raises(SpecError) as info:
        load_file(path)
    assert [(p.line, p.reason) for p in info.value.problems] == [
        (3, "'rows.txt' is not valid: a cases file must end in .csv, .jsonl, .yaml or .yml")
    ]


def test_a_cases_file_read_once_per_load(tmp_path: Path) -> None:
    write(tmp_path / "rows.csv", "q\nx\n")
    path = write(tmp_path / "s.yaml", "model: m\nmessages: [{role: user, content: x}]\n"
                                      "cases: rows.csv\nconversations: [{name: a}, {name: b}]\n")
    a, b = load_file(path).conversations
    assert a.cases is b.cases


# -- discovery ------------------------------------------------------------------------------

def test_discover(tmp_path: Path) -> None:
    for name in ["b.yaml", "a.yml", "sub/c.yaml", "_data/cases.yaml", "sub/_skip.yaml",
                 ".hidden/d.yaml", "notes.md", "sub/.e.yaml"]:
        write(tmp_path / name, "x: 1\n")
    given = write(tmp_path / "_explicit.yaml", "x: 1\n")
    found = discover([tmp_path, given])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "_explicit.yaml", "a.yml", "b.yaml", "sub/c.yaml",
    ]


def test_discover_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        discover([tmp_path / "missing"])


# -- the schema -----------------------------------------------------------------------------

def _property_schemas(node: Any) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            out.append((name, sub))
        for key, value in node.items():
            if key not in ("if", "then", "else"):  # conditions restate documented properties
                out.extend(_property_schemas(value))
    elif isinstance(node, list):
        for value in node:
            out.extend(_property_schemas(value))
    return out


def test_schema_is_valid_and_documents_every_property() -> None:
    from jsonschema import Draft202012Validator

    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] and schema["title"]
    properties = _property_schemas(schema)
    assert len(properties) > 100
    assert [name for name, sub in properties if "description" not in sub] == []


def test_schema_file_is_the_one_shipped_at_the_repo_root() -> None:
    root = Path(__file__).parent.parent / "schemas" / "convo.schema.json"
    assert json.loads(root.read_text()) == load_schema()


def test_top_level_and_conversation_keys_match() -> None:
    schema = load_schema()
    top = set(schema["properties"])
    conv = set(schema["$defs"]["conversation"]["properties"])
    assert top - conv == {"$schema", "conversations"}
    assert conv == top - {"$schema", "conversations"}


def test_params_are_exactly_the_sdk_parameters() -> None:
    """zhipuai's create() keywords, plus the newer ones zai-sdk 0.2.3 names (sent through
    zhipuai's extra_body), plus glmrun's own extra_body."""
    import inspect

    from zhipuai.api_resource.chat.completions import Completions

    sdk = set(inspect.signature(Completions.create).parameters) - {
        "self", "model", "messages", "stream", "extra_headers", "extra_body", "timeout"}
    params = set(load_schema()["$defs"]["params"]["properties"])
    newer = {"reasoning_effort", "tool_stream", "watermark_enabled"}
    assert params == sdk | newer | {"extra_body"}
    assert sdk == {
        "request_id", "user_id", "do_sample", "temperature", "top_p", "max_tokens", "seed",
        "stop", "tools", "tool_choice", "response_format", "thinking", "meta",
        "sensitive_word_check", "extra",
    }


def test_a_full_featured_file_is_valid(tmp_path: Path) -> None:
    write(tmp_path / "img.png", "not read at load time")
    path = write(tmp_path / "full.yaml", """\
# yaml-language-server: $schema=../schemas/convo.schema.json
name: full
description: every feature once
model: glm-4-flash
mode: async
base_url: http://127.0.0.1:8000/api/paas/v4
params:
  request_id: "r-{{ case_index }}"
  user_id: user-123456
  do_sample: true
  temperature: 0.5
  top_p: 0.9
  max_tokens: 256
  seed: 7
  stop: END
  tool_choice: auto
  response_format: {type: json_object}
  thinking: {type: disabled}
  meta: {user_name: Ann, bot_name: Bot}
  sensitive_word_check: {type: ALL, status: DISABLE}
  extra_body: {new_param: 1}
  tools:
    - type: function
      function:
        name: get_weather
        description: Weather for a city
        parameters: {type: object, properties: {city: {type: string}}, required: [city]}
      respond:
        cases:
          - when: {city: Paris}
            result: {temp: 20}
        default: "no data for {{ args.city }}"
    - type: web_search
      web_search: {enable: true}
vars: {user: Ann}
messages:
  - {role: system, content: Be brief.}
  - role: user
    content:
      - {type: text, text: "hi {{ user }}"}
      - {type: image_url, image_url: {url: img.png}}
  - role: assistant
    tool_calls:
      - {id: c1, type: function, function: {name: get_weather, arguments: {city: Paris}}}
  - {role: tool, tool_call_id: c1, content: '{"temp": 20}'}
turns:
  - again
  - content: and?
    expect: [{max_ttft_ms: 500, name: fast}]
expect:
  - {contains: Ann, ignore_case: true}
  - {regex: "^a", flags: im}
  - {is_json: true}
  - {json_schema: {type: object}}
  - {json_path: "$.a", value: 1}
  - {finish_reason: stop}
  - {tool_call: get_weather, arguments: {city: Paris}}
  - {max_latency_ms: 3000}
  - {max_tokens: 100}
  - {python: "checks:ok"}
  - {judge: Is it polite?, model: glm-4-plus}
  - {equals: x}
  - {starts_with: x}
  - {not_contains: x}
cases: [{user: Bob}]
repeat: 2
pass_rate: 0.5
max_tool_rounds: 3
tags: [a, b]
""")
    (conv,) = load_file(path).conversations
    assert conv.name == "full"
    assert conv.base_url == "http://127.0.0.1:8000/api/paas/v4"
    assert len(conv.expect) == 14


def test_citations_and_content_filter_items_are_validated(tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", """\
model: glm-4.7
messages: [{role: user, content: hi}]
expect:
  - {citations: 2, domain: example.com}
  - {content_filter: 3, compare: at_least, role: assistant}
""")
    assert len(load_file(good).conversations[0].expect) == 2
    bad = write(tmp_path / "bad.yaml", """\
model: glm-4.7
messages: [{role: user, content: hi}]
expect:
  - {contains: a, domain: example.com}
  - {content_filter: 4}
  - {content_filter: 1, role: system}
  - {citations: 0}
  - {contains: a, count: reply}
""")
    with pytest.raises(SpecError) as info:
        load_file(bad)
    assert [(p.line, p.path, p.reason) for p in info.value.problems] == [
        (4, "expect[0].domain", "'domain' only applies together with 'citations'"),
        (5, "expect[1].content_filter", "4 is greater than the maximum of 3"),
        (6, "expect[2].role", "'system' is not one of ['assistant', 'user', 'history']"),
        (7, "expect[3].citations", "0 is less than the minimum of 1"),
        (8, "expect[4].count", "'count' only applies together with 'max_tokens'"),
    ]
