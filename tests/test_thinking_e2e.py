"""Issue 12, thinking models: reasoning sent back in tool rounds (interleaved thinking) and across
turns with `clear_thinking: false` (preserved thinking), the thinking parameters as Zhipu
documents them, few-shot messages with reasoning. CLI → real SDK → emulator, sync and stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import chat_bodies, glmrun, run, transcripts, write

from glmrun.mock import MockServer

WEATHER = """
    model: glm-4.7
    params:
      thinking: {type: enabled}
      tools:
        - type: function
          function:
            name: get_weather
            parameters: {type: object, properties: {city: {type: string}}}
          respond: {result: "{{ args.city }}: 晴"}
    messages:
      - role: user
        content: '天气？ [[tool:get_weather {"city": "北京"} | get_weather {"city": "上海"}]]'
"""
ASK = '天气？ [[tool:get_weather {"city": "北京"} | get_weather {"city": "上海"}]]'
THOUGHT = "Thinking about: 天气？"
CALLS = [{"id": f"call_{i}", "type": "function",
          "function": {"name": "get_weather", "arguments": f'{{"city": "{city}"}}'}}
         for i, city in ((1, "北京"), (2, "上海"))]


@pytest.mark.parametrize("sdk", ["zhipuai", "zai"])
@pytest.mark.parametrize("mode", ["sync", "stream"])
def test_a_tool_round_sends_the_reasoning_back_with_the_results(
    api: MockServer, tmp_path: Path, mode: str, sdk: str
) -> None:
    out = tmp_path / "out"
    result = run(api, write(tmp_path, "weather.yaml", WEATHER), out, "--mode", mode,
                 "--sdk", sdk)
    assert result.exit_code == 0, result.output
    first, second = chat_bodies(api)
    sent_by = {"zai": "z-ai-sdk-python", "zhipuai": "zhipu-sdk-python"}[sdk]
    assert {r.headers["x-request-sdk"] for r in api.requests} == {sent_by}  # that SDK's
    assert first["messages"] == [{"role": "user", "content": ASK}]
    # the assistant message of the tool round carries the first reply's reasoning, and the
    # two calls made at once are answered in order, each with its id
    assert second["messages"] == [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": "", "reasoning_content": THOUGHT, "tool_calls": CALLS},
        {"role": "tool", "tool_call_id": "call_1", "content": "北京: 晴"},
        {"role": "tool", "tool_call_id": "call_2", "content": "上海: 晴"},
    ]
    t = transcripts(out)["weather"]
    assert t["messages"] == [*second["messages"], {
        "role": "assistant", "content": "Tool results: 北京: 晴; 上海: 晴",
        "reasoning_content": THOUGHT}]
    assert [c["reasoning_content"] for c in t["calls"]] == [THOUGHT, THOUGHT]


TWO_TURNS = """
    model: glm-4.7
    params: {thinking: {type: enabled, clear_thinking: CLEAR}}
    messages:
      - {role: user, content: 一}
    turns: [二]
"""


@pytest.mark.parametrize(("clear", "kept"), [("false", True), ("true", False)])
def test_clear_thinking_false_sends_every_earlier_reasoning_back(
    api: MockServer, tmp_path: Path, clear: str, kept: bool
) -> None:
    out = tmp_path / "out"
    path = write(tmp_path, "turns.yaml", TWO_TURNS.replace("CLEAR", clear))
    result = run(api, path, out)
    assert result.exit_code == 0, result.output
    _, second = chat_bodies(api)
    earlier: dict[str, Any] = {"role": "assistant", "content": "Echo: 一 (1 messages)"}
    if kept:
        earlier["reasoning_content"] = "Thinking about: 一"
    assert second["messages"] == [{"role": "user", "content": "一"}, earlier,
                                  {"role": "user", "content": "二"}]
    assert second["thinking"] == {"type": "enabled", "clear_thinking": clear == "true"}


def test_thinking_parameters_are_first_class_and_few_shot_reasoning_is_sent(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "params.yaml", """
        model: glm-5
        params: {reasoning_effort: high, tool_stream: true, watermark_enabled: false}
        messages:
          - {role: user, content: 1+1?}
          - {role: assistant, content: "2", reasoning_content: 一加一等于二}
          - {role: user, content: 2+2?}
    """)
    out = tmp_path / "out"
    result = run(api, path, out, "--mode", "stream")
    assert result.exit_code == 0, result.output
    (body,) = chat_bodies(api)
    assert (body["reasoning_effort"], body["tool_stream"], body["watermark_enabled"]) == (
        "high", True, False)
    assert body["messages"][1] == {"role": "assistant", "content": "2",
                                   "reasoning_content": "一加一等于二"}


@pytest.mark.parametrize(("params", "problem"), [
    ("{reasoning_effort: huge}", "params.reasoning_effort: 'huge' is not one of"),
    ("{tool_stream: 'yes'}", "params.tool_stream: 'yes' is not of type 'boolean'"),
    ("{thinking: {type: enabled, clear_thinking: 0}}",
     "params.thinking.clear_thinking: 0 is not of type 'boolean'"),
])
def test_thinking_parameters_are_validated(tmp_path: Path, params: str, problem: str) -> None:
    path = write(tmp_path, "bad.yaml", f"""
        model: glm-4.7
        params: {params}
        messages: [{{role: user, content: hi}}]
    """)
    result = glmrun("validate", path)
    assert result.exit_code == 2
    assert problem in result.output
