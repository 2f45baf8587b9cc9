"""Planning: conversations × cases × repeats, rendered up front, with stable ids."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import pytest

from glmrun.errors import InputError, SpecError, TemplateError
from glmrun.plan import PlanError, PlannedTurn, RunPlan, plan_runs, validate_paths, wire_params
from glmrun.spec import load_file


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def plans_for(*paths: Path, **options: object) -> list[RunPlan]:
    return plan_runs([load_file(p) for p in paths], **options)  # type: ignore[arg-type]


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


SINGLE = "model: glm-4-flash\nmessages:\n  - {role: user, content: 'hi {{ user }}'}\n" \
         "vars: {user: Ann}\n"


# -- ids ------------------------------------------------------------------------------------

def test_single_conversation_id_is_its_name(tmp_path: Path) -> None:
    (plan,) = plans_for(write(tmp_path / "greeting.yaml", SINGLE))
    assert (plan.id, plan.group_id, plan.case_index, plan.repeat_index) == (
        "greeting", "greeting", None, None
    )
    assert plan.case_vars == {}
    assert plan.source.endswith("greeting.yaml")


def test_suite_ids_carry_the_file_stem_case_and_repeat(tmp_path: Path) -> None:
    path = write(tmp_path / "suite.yaml", """\
model: m
messages: [{role: user, content: x}]
conversations:
  - name: plain
  - name: cased
    cases: [{a: 1}, {a: 2}]
  - name: repeated
    repeat: 2
  - name: both
    cases: [{a: 1}, {a: 2}, {a: 3}, {a: 4}, {a: 5}, {a: 6}, {a: 7}, {a: 8}, {a: 9}, {a: 10}]
    repeat: 2
""")
    plans = plans_for(path)
    ids = [p.id for p in plans]
    assert ids[:5] == ["suite--plain", "suite--cased--case1", "suite--cased--case2",
                       "suite--repeated--r1", "suite--repeated--r2"]
    assert ids[5:9] == ["suite--both--case01--r1", "suite--both--case01--r2",
                        "suite--both--case02--r1", "suite--both--case02--r2"]
    assert ids[-1] == "suite--both--case10--r2"
    assert len(set(ids)) == len(ids) == 5 + 20
    assert [(p.case_index, p.repeat_index) for p in plans[5:8]] == [(0, 0), (0, 1), (1, 0)]
    assert plans[6].group_id == "suite--both--case01"


def test_one_conversation_in_a_suite_list_is_named_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "model: m\nmessages: [{role: user, content: x}]\n"
                                      "conversations: [{name: only}]\n")
    assert [p.id for p in plans_for(path)] == ["only"]


def test_clashing_ids_across_files_use_the_relative_path(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "greet.yaml", SINGLE)
    b = write(tmp_path / "b" / "greet.yaml", SINGLE)
    other = write(tmp_path / "b" / "other.yaml", SINGLE)
    assert [p.id for p in plans_for(a, b, other)] == [
        "a__greet--greet", "b__greet--greet", "other",
    ]


def test_ids_are_filesystem_safe(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "model: m\nmessages: [{role: user, content: x}]\n"
                                      "conversations: [{name: 'a/b: c?'}, {name: 'a_b_c_'},"
                                      " {name: 问候}]\n")
    assert [p.id for p in plans_for(path)] == ["s--a_b_c_", "s--a_b_c_~2", "s--问候"]


# -- filter ---------------------------------------------------------------------------------

FILTERED = """\
model: m
messages: [{role: user, content: x}]
conversations:
  - name: greet-formal
  - name: greet-casual
  - name: farewell
    cases: [{a: 1}, {a: 2}]
"""


@pytest.mark.parametrize(("pattern", "ids"), [
    ("greet-*", ["f--greet-formal", "f--greet-casual"]),
    ("casual", ["f--greet-casual"]),
    ("*case2", ["f--farewell--case2"]),
    ("f--farewell--case1", ["f--farewell--case1"]),
    ("nothing", []),
])
def test_name_filter(tmp_path: Path, pattern: str, ids: list[str]) -> None:
    path = write(tmp_path / "f.yaml", FILTERED)
    assert [p.id for p in plans_for(path, name_filter=pattern)] == ids


def test_filtered_out_runs_are_not_rendered(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", """\
model: m
messages: [{role: user, content: x}]
conversations:
  - name: good
  - name: broken
    messages: [{role: user, content: "{{ undefined_thing }}"}]
""")
    assert [p.id for p in plans_for(path, name_filter="good")] == ["f--good"]


# -- variables ------------------------------------------------------------------------------

def test_variable_precedence_vars_then_case_then_cli(tmp_path: Path) -> None:
    path = write(tmp_path / "v.yaml", """\
model: m
vars: {a: file, b: file, c: file}
messages: [{role: user, content: "{{ a }} {{ b }} {{ c }} {{ case_index }} {{ case.b }}"}]
conversations:
  - name: x
    vars: {b: conv}
    cases: [{c: row, b: row-b}]
""")
    (plan,) = plans_for(path, cli_vars={"c": "cli"})
    assert plan.messages[0]["content"] == "file row-b cli 0 row-b"
    assert plan.variables["c"] == "cli"
    assert plan.case_vars == {"c": "row", "b": "row-b"}


def test_conversation_vars_beat_file_vars(tmp_path: Path) -> None:
    path = write(tmp_path / "v.yaml", """\
model: m
vars: {a: file}
messages: [{role: user, content: "{{ a }}"}]
conversations: [{name: x, vars: {a: conv}}, {name: y}]
""")
    assert [p.messages[0]["content"] for p in plans_for(path)] == ["conv", "file"]


def test_cli_values_stay_strings(tmp_path: Path) -> None:
    path = write(tmp_path / "v.yaml", "model: m\nmessages: "
                                      "[{role: user, content: '{{ n is string }} {{ n }}'}]\n")
    (plan,) = plans_for(path, cli_vars={"n": "07"})
    assert plan.messages[0]["content"] == "True 07"


def test_model_and_mode_overrides(tmp_path: Path) -> None:
    path = write(tmp_path / "v.yaml", "model: '{{ m }}'\nvars: {m: glm-4-air}\nmode: stream\n"
                                      "messages: [{role: user, content: x}]\n")
    (plan,) = plans_for(path)
    assert (plan.model, plan.mode) == ("glm-4-air", "stream")
    (plan,) = plans_for(path, model_override="glm-4-plus", mode_override="async")
    assert (plan.model, plan.mode) == ("glm-4-plus", "async")
    with pytest.raises(InputError, match="mode 'fast' is not one of"):
        plans_for(path, mode_override="fast")


# -- rendering ------------------------------------------------------------------------------

TOOLS = """\
model: m
vars: {city: Paris, unit: C}
params:
  temperature: 0.3
  user_id: "u-{{ city }}"
  extra_body: {new_flag: "{{ unit }}"}
  tools:
    - type: function
      function:
        name: get_weather
        description: "Weather in {{ unit }}"
        parameters: {type: object}
      respond: {result: "sunny in {{ args.city }}"}
    - {type: web_search, web_search: {enable: true}}
messages:
  - {role: user, content: "weather in {{ city }}?"}
  - role: assistant
    tool_calls:
      - {id: c1, type: function, function: {name: get_weather, arguments: {city: "{{ city }}"}}}
  - {role: tool, tool_call_id: c1, content: sunny}
turns:
  - "and tomorrow in {{ city }}?"
  - content: [{type: text, text: "{{ unit }}"}]
    expect: [{contains: "{{ city }}"}]
expect:
  - {regex: "{{ city }}", flags: i}
  - {json_schema: {type: object, properties: {c: {const: "{{ city }}"}}}}
"""


def test_everything_renderable_is_rendered(tmp_path: Path) -> None:
    (plan,) = plans_for(write(tmp_path / "t.yaml", TOOLS))
    assert plan.messages == (
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    )
    assert plan.turns == (
        PlannedTurn("and tomorrow in Paris?", ()),
        PlannedTurn(({"type": "text", "text": "C"},), ({"contains": "Paris"},)),
    )
    assert plan.expect == (
        {"regex": "Paris", "flags": "i"},
        {"json_schema": {"type": "object", "properties": {"c": {"const": "Paris"}}}},
    )
    assert plan.params["user_id"] == "u-Paris"
    assert plan.params["tools"][0]["function"]["description"] == "Weather in C"


def test_respond_stays_raw_and_feeds_tool_responders(tmp_path: Path) -> None:
    (plan,) = plans_for(write(tmp_path / "t.yaml", TOOLS))
    assert plan.params["tools"][0]["respond"] == {"result": "sunny in {{ args.city }}"}
    assert plan.tool_responders == {"get_weather": {"result": "sunny in {{ args.city }}"}}


def test_wire_params_strips_respond_and_lifts_extra_body(tmp_path: Path) -> None:
    (plan,) = plans_for(write(tmp_path / "t.yaml", TOOLS))
    assert wire_params(plan.params) == {
        "temperature": 0.3,
        "user_id": "u-Paris",
        "new_flag": "C",
        "tools": [
            {"type": "function", "function": {"name": "get_weather",
                                              "description": "Weather in C",
                                              "parameters": {"type": "object"}}},
            {"type": "web_search", "web_search": {"enable": True}},
        ],
    }
    assert "respond" in plan.params["tools"][0]  # the plan itself is untouched


def test_wire_params_without_tools() -> None:
    assert wire_params({"temperature": 0.5, "extra": {"target": {}}}) == {
        "temperature": 0.5, "extra": {"target": {}},
    }


def test_local_image_becomes_a_data_url(tmp_path: Path) -> None:
    png = tiny_png()
    (tmp_path / "img" / "dot.png").parent.mkdir()
    (tmp_path / "img" / "dot.png").write_bytes(png)
    path = write(tmp_path / "v.yaml", """\
model: glm-4v-flash
vars: {name: dot}
messages:
  - role: user
    content:
      - {type: text, text: what?}
      - {type: image_url, image_url: {url: "img/{{ name }}.png"}}
      - {type: image_url, image_url: {url: "https://example.com/x.png"}}
""")
    (plan,) = plans_for(path)
    parts = plan.messages[0]["content"]
    assert parts[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(
        png).decode()
    assert parts[2]["image_url"]["url"] == "https://example.com/x.png"


def test_template_errors_from_every_case_are_collected(tmp_path: Path) -> None:
    path = write(tmp_path / "e.yaml", """\
model: m
messages:
  - {role: user, content: "{{ city }}"}
cases: [{city: a}, {town: b}, {town: c}]
expect: [{contains: "{{ missing }}"}]
""")
    with pytest.raises(PlanError) as info:
        plans_for(path)
    assert isinstance(info.value, SpecError) and isinstance(info.value, TemplateError)
    assert [(p.line, p.path, p.reason) for p in info.value.problems] == [
        (3, "messages[0].content", "undefined variable 'city' (conversation 'e', cases 2, 3)"),
        (5, "expect[0].contains",
         "undefined variable 'missing' (conversation 'e', cases 1, 2, 3)"),
    ]
    assert str(info.value).splitlines()[0].endswith(
        "e.yaml:3:27: messages[0].content: undefined variable 'city' (conversation 'e', cases 2, 3)"
    )


def test_errors_in_inherited_messages_point_at_the_top_level(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", """\
model: m
messages: [{role: user, content: "{{ who }}"}]
conversations:
  - {name: ok, vars: {who: x}}
  - name: bad
""")
    with pytest.raises(PlanError) as info:
        plans_for(path)
    assert [(p.line, p.path, p.reason) for p in info.value.problems] == [
        (2, "messages[0].content", "undefined variable 'who' (conversation 'bad')"),
    ]


def test_validate_paths_reports_every_file(tmp_path: Path) -> None:
    write(tmp_path / "good.yaml", SINGLE)
    write(tmp_path / "bad1.yaml", "model: m\nmessages: [{role: usr, content: x}]\n")
    write(tmp_path / "bad2.yaml", "model: m\nmessages: [{role: user, content: '{{ x }}'}]\n")
    write(tmp_path / "_data" / "ignored.yaml", "not: [a conversation\n")
    problems = validate_paths([tmp_path], {})
    assert [(Path(p.file).name, p.line, p.path) for p in problems] == [
        ("bad1.yaml", 2, "messages[0].role"),
        ("bad2.yaml", 2, "messages[0].content"),
    ]
    assert validate_paths([tmp_path / "good.yaml"], {}) == []
    assert validate_paths([tmp_path / "bad2.yaml"], {"x": "1"}) == []


def test_validate_paths_on_an_empty_folder(tmp_path: Path) -> None:
    (problem,) = validate_paths([tmp_path], {})
    assert problem.reason == "no .yaml or .yml files found"
