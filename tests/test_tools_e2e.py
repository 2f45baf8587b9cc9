"""Issue 6, function tools end to end: CLI → real zhipuai SDK → emulator, in every call mode.

The emulator calls tools when told to by `[[tool:NAME ARGS]]` markers in the user message: one
marker per round, `a {..} | b {..}` for calls made at once (see glmrun/mock/markers.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import (
    FIXTURES,
    REPO,
    async_bodies,
    chat_bodies,
    glmrun,
    run,
    transcripts,
    write,
)

from glmrun.mock import MockServer

TOOLS_DIR = FIXTURES / "tools"
MODES = ("sync", "stream", "async")

WEATHER_TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "查询城市的天气",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "查询时区的当前时间",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
]
ASK = {"role": "user", "content": '北京现在天气和时间如何？ [[tool:get_weather {"city": "北京"}]] '
                                  '[[tool:get_time {"tz": "Asia/Shanghai"}]]'}
CALL_1 = {"id": "call_1", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city": "北京"}'}}
CALL_2 = {"id": "call_2", "type": "function",
          "function": {"name": "get_time", "arguments": '{"tz": "Asia/Shanghai"}'}}
RESULT_1 = "北京: 晴, 25°C"
RESULT_2 = '{"tz": "Asia/Shanghai", "time": "12:00"}'
ROUND_1 = [{"role": "assistant", "content": "", "tool_calls": [CALL_1]},
           {"role": "tool", "tool_call_id": "call_1", "content": RESULT_1}]
ROUND_2 = [{"role": "assistant", "content": "", "tool_calls": [CALL_2]},
           {"role": "tool", "tool_call_id": "call_2", "content": RESULT_2}]


def sent(server: MockServer, mode: str) -> list[dict[str, Any]]:
    return async_bodies(server) if mode == "async" else chat_bodies(server)


def without_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "duration_ms"} for r in records]


@pytest.mark.parametrize("mode", MODES)
def test_a_two_round_tool_conversation(api: MockServer, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out"
    result = run(api, TOOLS_DIR / "weather.yaml", out, "--mode", mode)
    assert result.exit_code == 0, result.output
    t = transcripts(out)["weather"]
    assert t["status"] == "passed" and all(e["passed"] for e in t["expectations"])
    final = f"Tool results: {RESULT_1}; {RESULT_2}"
    assert t["messages"] == [ASK, *ROUND_1, *ROUND_2, {"role": "assistant", "content": final}]
    assert without_timing(t["tool_results"]) == [
        {"turn": 0, "round": 0, "id": "call_1", "name": "get_weather",
         "arguments": '{"city": "北京"}', "result": RESULT_1, "error": None},
        {"turn": 0, "round": 1, "id": "call_2", "name": "get_time",
         "arguments": '{"tz": "Asia/Shanghai"}', "result": RESULT_2, "error": None},
    ]
    assert all(r["duration_ms"] >= 0 for r in t["tool_results"])
    calls = t["calls"]
    assert [(c["turn"], c["round"], c["finish_reason"]) for c in calls] == [
        (0, 0, "tool_calls"), (0, 1, "tool_calls"), (0, 2, "stop")]
    assert [c["tool_calls"] for c in calls] == [[CALL_1], [CALL_2], []]
    # Exactly what the emulator received: the tool declarations without glmrun's `respond`,
    # and each round's assistant tool_calls message followed by the tool message answering it.
    common = {"model": "glm-4-flash", "tools": WEATHER_TOOLS, "tool_choice": "auto",
              "response_format": None, "thinking": None,
              **({"stream": True} if mode == "stream" else {})}
    assert sent(api, mode) == [
        {**common, "messages": [ASK]},
        {**common, "messages": [ASK, *ROUND_1]},
        {**common, "messages": [ASK, *ROUND_1, *ROUND_2]},
    ]
    if mode == "stream":
        assert all(c["chunks"] > 1 and c["ttft_ms"] is not None for c in calls)
    if mode == "async":
        assert all(c["task_id"] and c["polls"] == 3 for c in calls)


@pytest.mark.parametrize("mode", MODES)
def test_calls_made_at_once_are_answered_in_order(
    api: MockServer, tmp_path: Path, mode: str
) -> None:
    """Several tool calls in one reply (in stream mode: tool_call deltas merged by index)."""
    out = tmp_path / "out"
    result = run(api, TOOLS_DIR / "cases.yaml", out, "--mode", mode)
    assert result.exit_code == 0, result.output
    t = transcripts(out)["cases"]
    args = ['{"city": "北京"}', '{"city": "上海", "days": 2}', '{"city": "广州"}',
            '{"city": "成都", "days": 2}']
    names = ["get_weather"] * 3 + ["forecast"]
    calls = [{"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
             for i, (n, a) in enumerate(zip(names, args, strict=True), 1)]
    # respond.cases picked by arguments, templated with args and the file's vars; the default;
    # a Python callable's dict sent as JSON.
    results = ["北京: 晴 25°C", '{"city": "上海", "sky": ["雨", "阴"]}', "广州: 没有数据",
               '{"city": "成都", "days": 2, "sky": ["晴", "晴"]}']
    assert t["messages"][1] == {"role": "assistant", "content": "", "tool_calls": calls}
    assert t["messages"][2:6] == [{"role": "tool", "tool_call_id": f"call_{i}", "content": r}
                                  for i, r in enumerate(results, 1)]
    assert t["messages"][6] == {"role": "assistant",
                                "content": "Tool results: " + "; ".join(results)}
    assert [(r["round"], r["name"], r["arguments"], r["result"], r["error"])
            for r in t["tool_results"]] == [
        (0, n, a, r, None) for n, a, r in zip(names, args, results, strict=True)]
    assert sent(api, mode)[1]["messages"] == t["messages"][:6]


ERRORS = {
    "invalid-json": ("get_weather", '{"city": 北京}',
                     "arguments are not valid JSON: Expecting value at char 9"),
    "not-an-object": ("get_weather", '["北京"]', "arguments must be a JSON object, got list"),
    "unknown-function": ("get_time", '{"tz": "UTC"}',
                         "unknown function 'get_time' "
                         "(declared: flaky, get_weather, odd, picky, quitter)"),
    "callable-raises": ("flaky", '{"city": "北京"}',
                        "hooks:broken raised RuntimeError: weather service down for 北京"),
    "callable-exits": ("quitter", '{"city": "北京"}',
                       "hooks:quits raised SystemExit: giving up on 北京"),
    "callable-not-json": ("odd", '{"city": "北京"}',
                          "hooks:not_json returned a value that is not JSON: "
                          "Object of type set is not JSON serializable"),
    "no-case-matches": ("picky", '{"city": "广州"}',
                        "no case of 'picky' matches arguments {\"city\": \"广州\"}"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_a_tool_error_goes_back_to_the_model_and_the_conversation_completes(
    api: MockServer, tmp_path: Path, name: str, mode: str
) -> None:
    function, arguments, error = ERRORS[name]
    out = tmp_path / "out"
    result = run(api, TOOLS_DIR / "errors.yaml", out, "--filter", name, "--mode", mode)
    assert result.exit_code == 0, result.output
    t = transcripts(out)[f"errors--{name}"]
    assert t["status"] == "passed" and t["error"] is None
    (record,) = t["tool_results"]
    assert (record["name"], record["arguments"], record["result"], record["error"]) == (
        function, arguments, None, error)
    content = json.dumps({"error": error}, ensure_ascii=False)
    tool_message = {"role": "tool", "tool_call_id": "call_1", "content": content}
    assert t["messages"][-2:] == [tool_message,
                                  {"role": "assistant", "content": f"Tool results: {content}"}]
    first, second = sent(api, mode)
    assert second["messages"] == [*first["messages"], t["messages"][1], tool_message]
    md = (out / f"errors--{name}.md").read_text("utf-8")
    assert f"Tool error:\n\n```text\n{error}\n```" in md


def test_more_tool_rounds_than_allowed_is_an_error(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "loop.yaml", """
        model: m
        max_tool_rounds: 2
        params:
          tools:
            - type: function
              function: {name: f, parameters: {type: object}}
              respond: {result: r}
        messages:
          - {role: user, content: "[[tool:f {}]] [[tool:f {}]] [[tool:f {}]]"}
    """)
    out = tmp_path / "out"
    result = run(api, path, out)
    assert result.exit_code == 3, result.output
    t = transcripts(out)["loop"]
    assert t["status"] == "error" and t["error"]["kind"] == "tool_rounds"
    assert t["error"]["message"] == "the model still called tools after max_tool_rounds=2"
    assert len(chat_bodies(api)) == 3 and len(t["tool_results"]) == 2


def test_tool_choice_and_builtin_tools_pass_through_unchanged(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "builtin.yaml", """
        model: glm-4-plus
        params:
          tool_choice: auto
          tools:
            - type: web_search
              web_search: {enable: true, search_query: 今日新闻, search_result: true}
            - type: retrieval
              retrieval:
                knowledge_id: kb-123
                prompt_template: "{{ '{{knowledge}}' }} {{ '{{question}}' }}"
        messages: [{role: user, content: 今天有什么新闻？}]
    """)
    out = tmp_path / "out"
    result = run(api, path, out, "--mode", "stream")
    assert result.exit_code == 0, result.output
    tools = [
        {"type": "web_search",
         "web_search": {"enable": True, "search_query": "今日新闻", "search_result": True}},
        {"type": "retrieval",
         "retrieval": {"knowledge_id": "kb-123", "prompt_template": "{{knowledge}} {{question}}"}},
    ]
    (body,) = chat_bodies(api)
    assert body == {"model": "glm-4-plus",
                    "messages": [{"role": "user", "content": "今天有什么新闻？"}],
                    "tools": tools, "tool_choice": "auto", "response_format": None,
                    "thinking": None, "stream": True}
    t = transcripts(out)["builtin"]
    assert t["params"] == {"tool_choice": "auto", "tools": tools}
    assert t["tool_results"] == [] and t["messages"][-1]["content"] == (
        "Echo: 今天有什么新闻？ (1 messages)")


def test_tools_example_validates_and_runs_green_on_the_mock(tmp_path: Path) -> None:
    path = REPO / "convos/tools.yaml"
    assert glmrun("validate", path).exit_code == 0
    out = tmp_path / "out"
    result = glmrun(path, "--mock", "-o", out)
    assert result.exit_code == 0, result.output
    ts = transcripts(out)
    assert ts and all(t["status"] == "passed" for t in ts.values())
    assert all(t["tool_results"] and not any(r["error"] for r in t["tool_results"])
               for t in ts.values())
