"""Planning: conversations × cases × repeats, rendered up front, with stable ids."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glmrun.errors import InputError, PlanError, SpecError, TemplateError
from glmrun.load.spec import load_file
from glmrun.plan.checking import validate_paths
from glmrun.plan.plans import RunPlan, plan_runs
from glmrun.plan.render import PlannedTurn, wire_params


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
    repeat: 10
""")
    plans = plans_for(path)
    ids = [p.id for p in plans]
    assert ids[:5] == ["suite--plain", "suite--cased--case1", "suite--cased--case2",
                       "suite--repeated--r1", "suite--repeated--r2"]
    assert ids[5:8] == ["suite--both--case1--r1", "suite--both--case1--r2",
                        "suite--both--case1--r3"]
    assert ids[-1] == "suite--both--case10--r10"  # no padding: row 1 is case1 however many
    assert len(set(ids)) == len(ids) == 5 + 100
    assert [(p.case_index, p.repeat_index) for p in plans[5:8]] == [(0, 0), (0, 1), (0, 2)]
    assert plans[6].group_id == "suite--both--case1"


def test_one_conversation_in_a_suite_list_keeps_the_file_stem(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "model: m\nmessages: [{role: user, content: x}]\n"
                                      "conversations: [{name: only}]\n")
    assert [p.id for p in plans_for(path)] == ["s--only"]


def test_a_single_conversation_named_apart_from_its_file_carries_both(tmp_path: Path) -> None:
    path = write(tmp_path / "hello.yaml", SINGLE + "name: greet\n")
    assert [p.id for p in plans_for(path)] == ["hello--greet"]


def test_an_id_column_names_the_case(tmp_path: Path) -> None:
    write(tmp_path / "_data" / "rows.csv", "id,user\nann,Ann\n,Bob\nzoe,Zoe\n")
    path = write(tmp_path / "pad.yaml", SINGLE + "cases: _data/rows.csv\n")
    assert [p.id for p in plans_for(path)] == ["pad--ann", "pad--case2", "pad--zoe"]


def test_duplicate_case_ids_are_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path / "pad.yaml", SINGLE + "cases: [{id: a}, {id: b}, {id: a}]\n")
    with pytest.raises(PlanError) as caught:
        plans_for(path)
    (problem,) = caught.value.problems
    assert (problem.path, problem.line) == ("cases", 5)
    assert problem.reason == ("case id 'a' of row 3 is already row 1's: case ids must be unique "
                              "(conversation 'pad', case 3)")


def test_ids_below_the_suite_folder_carry_the_folders(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "greet.yaml", SINGLE)
    b = write(tmp_path / "b" / "greet.yaml", SINGLE)
    roots = {a: tmp_path, b: tmp_path}
    assert [p.id for p in plans_for(a, b, roots=roots)] == ["a__greet", "b__greet"]


def test_same_named_files_from_two_folders_are_refused_not_renamed(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "greet.yaml", SINGLE)
    b = write(tmp_path / "b" / "greet.yaml", SINGLE)
    with pytest.raises(InputError, match="two runs would share the id 'greet'"):
        plans_for(a, b)


def test_ids_are_filesystem_safe(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "model: m\nmessages: [{role: user, content: x}]\n"
                                      "conversations: [{name: 'a/b: c?'}, {name: 问候}]\n")
    assert [p.id for p in plans_for(path)] == ["s--a_b_c_", "s--问候"]
    clash = write(tmp_path / "t.yaml", "model: m\nmessages: [{role: user, content: x}]\n"
                                       "conversations: [{name: 'a/b'}, {name: 'a_b'}]\n")
    with pytest.raises(InputError, match="differ only in characters a file name cannot hold"):
        plans_for(clash)


def test_a_models_list_runs_each_model_and_ids_carry_it(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", """\
models: [glm-4-flash, glm-4-plus]
messages: [{role: user, content: x}]
cases: [{a: 1}]
repeat: 2
""")
    plans = plans_for(path)
    assert [(p.id, p.group_id, p.model) for p in plans] == [
        ("m--case1@glm-4-flash--r1", "m--case1@glm-4-flash", "glm-4-flash"),
        ("m--case1@glm-4-flash--r2", "m--case1@glm-4-flash", "glm-4-flash"),
        ("m--case1@glm-4-plus--r1", "m--case1@glm-4-plus", "glm-4-plus"),
        ("m--case1@glm-4-plus--r2", "m--case1@glm-4-plus", "glm-4-plus"),
    ]


def test_one_cli_model_overrides_two_make_a_matrix(tmp_path: Path) -> None:
    path = write(tmp_path / "greeting.yaml", SINGLE)
    (plan,) = plans_for(path, model_override="glm-4-plus")
    assert (plan.id, plan.model) == ("greeting", "glm-4-plus")
    plans = plans_for(path, models=("a", "b"))
    assert [(p.id, p.model) for p in plans] == [("greeting@a", "a"), ("greeting@b", "b")]


SUITE_GROWTH = st.fixed_dictionaries({
    "files": st.lists(st.sampled_from(["a", "b", "sub/c", "sub/d"]), min_size=1, max_size=4,
                      unique=True),
    "convos": st.integers(1, 3),
    "rows": st.integers(0, 12),
    "models": st.integers(0, 3),
    "repeat": st.integers(1, 3),
})


def _suite_ids(root: Path, grown: dict[str, object]) -> set[str]:
    """The run ids of a suite described by `grown`, written under root and planned."""
    files = []
    models = ["glm-4-flash", "glm-4-plus", "glm-4-air"][: int(grown["models"])]  # type: ignore[call-overload]
    for name in grown["files"]:  # type: ignore[attr-defined]
        text = "model: m\n" if not models else f"models: {models}\n"
        text += f"repeat: {grown['repeat']}\nmessages: [{{role: user, content: x}}]\n"
        if grown["rows"]:
            text += "cases: [" + ", ".join(f"{{n: {i}}}" for i in range(int(grown["rows"]))) + "]\n"  # type: ignore[call-overload]
        text += "conversations: [" + ", ".join(
            f"{{name: c{i}}}" for i in range(int(grown["convos"]))) + "]\n"  # type: ignore[call-overload]
        files.append(write(root / f"{name}.yaml", text))
    return {p.id for p in plans_for(*files, roots=dict.fromkeys(files, root))}


@settings(max_examples=15, deadline=2000,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(small=SUITE_GROWTH, more=SUITE_GROWTH)
def test_growing_a_suite_never_renames_a_run(
    tmp_path_factory: pytest.TempPathFactory, small: dict[str, object], more: dict[str, object]
) -> None:
    """Adding files, conversations, case rows or models (or repeats) keeps every old id."""
    grown = {
        "files": list(dict.fromkeys([*small["files"], *more["files"]])),  # type: ignore[misc]
        **{k: max(small[k], more[k]) for k in ("convos", "repeat")},  # type: ignore[type-var]
        # a list given where there was none is a new axis, not growth (`x` → `x--case1`)
        **{k: max(small[k], more[k]) if small[k] else 0 for k in ("rows", "models")},  # type: ignore[type-var]
    }
    before = _suite_ids(tmp_path_factory.mktemp("before"), small)
    after = _suite_ids(tmp_path_factory.mktemp("after"), grown)
    if small["repeat"] == 1 and grown["repeat"] > 1:  # type: ignore[operator]
        # one run becoming several repeats is the one rename: `x` → `x--r1`, `x--r2`
        before = {f"{i}--r1" for i in before}
    assert before <= after


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
    assert plan.rendered.messages[0]["content"] == "file row-b cli 0 row-b"
    assert plan.variables["c"] == "cli"
    assert plan.case_vars == {"c": "row", "b": "row-b"}


def test_conversation_vars_beat_file_vars(tmp_path: Path) -> None:
    path = write(tmp_path / "v.yaml", """\
model: m
vars: {a: file}
messages: [{role: user, content: "{{ a }}"}]
conversations: [{name: x, vars: {a: conv}}, {name: y}]
""")
    assert [p.rendered.messages[0]["content"] for p in plans_for(path)] == ["conv", "file"]


def test_cli_values_stay_strings(tmp_path: Path) -> None:
    path = write(tmp_path / "v.yaml", "model: m\nmessages: "
                                      "[{role: user, content: '{{ n is string }} {{ n }}'}]\n")
    (plan,) = plans_for(path, cli_vars={"n": "07"})
    assert plan.rendered.messages[0]["content"] == "True 07"


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
    assert plan.rendered.messages == (
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    )
    assert plan.rendered.turns == (
        PlannedTurn("and tomorrow in Paris?", ()),
        PlannedTurn(({"type": "text", "text": "C"},), ({"contains": "Paris"},)),
    )
    assert plan.rendered.expect == (
        {"regex": "Paris", "flags": "i"},
        {"json_schema": {"type": "object", "properties": {"c": {"const": "Paris"}}}},
    )
    assert plan.rendered.params["user_id"] == "u-Paris"
    assert plan.rendered.params["tools"][0]["function"]["description"] == "Weather in C"


def test_respond_stays_raw_and_feeds_tool_responders(tmp_path: Path) -> None:
    (plan,) = plans_for(write(tmp_path / "t.yaml", TOOLS))
    assert plan.tool_responders == {"get_weather": {"result": "sunny in {{ args.city }}"}}
    assert plan.extractors == frozenset()  # get_weather has a `respond`


def test_params_are_rendered_as_sent_without_respond_and_with_extra_body_lifted(
    tmp_path: Path,
) -> None:
    (plan,) = plans_for(write(tmp_path / "t.yaml", TOOLS))
    assert plan.rendered.params == {
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
    assert plan.request(plan.rendered.messages).body() == {
        "model": "m", "messages": list(plan.rendered.messages), **plan.rendered.params}
    # the file's spec is untouched (its tool keeps `respond`, its call a mapping)
    assert "respond" in plan.spec.params["tools"][0]
    assert plan.spec.messages[1]["tool_calls"][0]["function"]["arguments"] == {
        "city": "{{ city }}"}


def test_wire_params_without_tools() -> None:
    assert wire_params({"temperature": 0.5, "extra": {"target": {}}}) == {
        "temperature": 0.5, "extra": {"target": {}},
    }


def test_local_image_becomes_a_data_url(tmp_path: Path) -> None:
    png = tiny_png()
    (tmp_path / "img" / "dot.png").parent.mkdir()
    (tmp_path / "img" / "dot.png").write_bytes(png)
    path = write(tmp_path / "v.yaml", """\
model: glm-4v-plus
vars: {name: dot}
messages:
  - role: user
    content:
      - {type: text, text: what?}
      - {type: image_url, image_url: {url: "img/{{ name }}.png"}}
      - {type: image_url, image_url: {url: "https://example.com/x.png"}}
""")
    (plan,) = plans_for(path)
    parts = plan.rendered.messages[0]["content"]
    assert parts[1]["image_url"]["url"] == base64.b64encode(png).decode()  # as sent
    assert parts[2]["image_url"]["url"] == "https://example.com/x.png"


def test_rows_naming_one_image_hold_one_copy_of_it(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(tiny_png())
    (tmp_path / "b.png").write_bytes(tiny_png() + b"\x00")
    path = write(tmp_path / "v.yaml", """\
model: glm-4v-plus
messages:
  - role: user
    content: [{type: image_url, image_url: {url: "{{ img }}.png"}}]
cases: [{img: a}, {img: b}, {img: a}, {img: b}]
""")
    urls = [p.rendered.messages[0]["content"][0]["image_url"]["url"] for p in plans_for(path)]
    assert urls[0] is urls[2] and urls[1] is urls[3] and urls[0] != urls[1]


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


def test_a_filter_naming_one_repeat_runs_that_repeat_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", SINGLE + "repeat: 3\n")
    assert [p.id for p in plans_for(path, name_filter="x--r1")] == ["x--r1"]
    assert [p.id for p in plans_for(path, name_filter="x--r*")] == ["x--r1", "x--r2", "x--r3"]
