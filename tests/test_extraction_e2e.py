"""Issue 12, structured extraction: a function declared without `respond:` is a JSON schema; the
model's call to it ends the turn, its arguments are the result, and no second request is made.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.e2e.harness import async_bodies, chat_bodies, run, transcripts, write

from glmrun.mock import MockServer

PERSON = '{"name": "张三", "age": 30}'
EXTRACT = f"""
    model: glm-4.7
    params:
      tools:
        - type: function
          function:
            name: record_person
            description: Record the person the text is about
            parameters:
              type: object
              properties: {{name: {{type: string}}, age: {{type: integer}}}}
              required: [name, age]
    messages:
      - role: user
        content: '张三今年三十岁。 [[tool:record_person {PERSON}]]'
    expect:
      - tool_call: record_person
        arguments: {{name: 张三}}
      - json_schema:
          type: object
          properties: {{age: {{const: 30}}}}
          required: [name, age]
      - {{json_path: "$.name", value: 张三}}
"""


@pytest.mark.parametrize("sdk", ["zhipuai", "zai"])
@pytest.mark.parametrize("mode", ["sync", "stream", "async"])
def test_a_call_to_a_function_without_respond_is_the_result(
    api: MockServer, tmp_path: Path, mode: str, sdk: str
) -> None:
    out = tmp_path / "out"
    result = run(api, write(tmp_path, "extract.yaml", EXTRACT), out, "--mode", mode,
                 "--sdk", sdk)
    assert result.exit_code == 0, result.output
    t = transcripts(out)["extract"]
    assert t["status"] == "passed"
    assert [e["passed"] for e in t["expectations"]] == [True, True, True]
    assert len(t["calls"]) == 1 and t["calls"][0]["finish_reason"] == "tool_calls"
    sent = async_bodies(api) if mode == "async" else chat_bodies(api)
    assert len(sent) == 1  # one request, no tool round
    (record,) = t["tool_results"]
    assert {k: record[k] for k in ("name", "arguments", "result", "error", "extracted")} == {
        "name": "record_person", "arguments": PERSON, "result": PERSON, "error": None,
        "extracted": True}


def test_a_wrong_extraction_fails_its_schema(api: MockServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    text = EXTRACT.replace(PERSON, '{"name": "张三", "age": "三十"}')
    result = run(api, write(tmp_path, "extract.yaml", text), out)
    assert result.exit_code == 1, result.output
    t = transcripts(out)["extract"]
    assert [e["passed"] for e in t["expectations"]] == [True, False, True]


def test_a_later_turn_sees_the_extraction_answered_with_its_arguments(
    api: MockServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    text = EXTRACT.split("    expect:")[0] + "    turns: [谢谢]\n"
    result = run(api, write(tmp_path, "extract.yaml", text), out)
    assert result.exit_code == 0, result.output
    first, second = chat_bodies(api)
    call = {"id": "call_1", "type": "function",
            "function": {"name": "record_person", "arguments": PERSON}}
    assert second["messages"] == [
        *first["messages"],
        {"role": "assistant", "content": "", "tool_calls": [call],  # glm-4.7 thinks
         "reasoning_content": "Thinking about: 张三今年三十岁。"},
        {"role": "tool", "tool_call_id": "call_1", "content": PERSON},
        {"role": "user", "content": "谢谢"},
    ]
    assert transcripts(out)["extract"]["messages"][-1] == {
        "role": "assistant", "content": "Echo: 谢谢 (4 messages)",
        "reasoning_content": "Thinking about: 谢谢"}


@pytest.mark.parametrize("sdk", ["zhipuai", "zai"])
def test_the_object_tool_choice_is_accepted_and_sent(
    api: MockServer, tmp_path: Path, sdk: str
) -> None:
    out = tmp_path / "out"
    choice = "{type: function, function: {name: record_person}}"
    text = EXTRACT.replace("    params:\n", f"    params:\n      tool_choice: {choice}\n")
    result = run(api, write(tmp_path, "extract.yaml", text), out, "--sdk", sdk)
    assert result.exit_code == 0, result.output
    (body,) = chat_bodies(api)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "record_person"}}
