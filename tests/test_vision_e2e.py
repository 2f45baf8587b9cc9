"""Issue 6, images and reply formats end to end: CLI → real zhipuai SDK → emulator.

Local images are read and inlined by glmrun as bare base64, the way the SDK would send a data:
URL (glmrun.plan.sendrules: the transcript holds what is sent), and the emulator describes what it
received as
`[image <mime> <bytes> bytes]`. Deep thinking gives reasoning_content; json_object a JSON reply.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from fixtures.e2e.harness import (
    REPO,
    async_bodies,
    chat_bodies,
    glmrun,
    run,
    transcripts,
    write,
)

from glmrun.mock import MockServer

CAT = REPO / "convos/images/cat.png"


def test_the_example_image_is_a_small_valid_png() -> None:
    data = CAT.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")
    assert 100 < len(data) < 1024


@pytest.mark.parametrize("mode", ["sync", "stream", "async"])
def test_an_image_from_a_local_file(api: MockServer, tmp_path: Path, mode: str) -> None:
    (tmp_path / "pics").mkdir()
    shutil.copy(CAT, tmp_path / "pics" / "cat.png")
    path = write(tmp_path, "see.yaml", """
        model: glm-4v-plus
        messages:
          - role: user
            content:
              - {type: text, text: 这是什么？}
              - {type: image_url, image_url: {url: pics/cat.png}}
        turns: [还有呢？]
    """)
    out = tmp_path / "out"
    result = run(api, path, out, "--mode", mode)
    assert result.exit_code == 0, result.output
    data = CAT.read_bytes()
    b64 = base64.b64encode(data).decode("ascii")
    t = transcripts(out)["see"]
    asked = {"role": "user", "content": [
        {"type": "text", "text": "这是什么？"},
        {"type": "image_url", "image_url": {"url": b64}}]}
    assert t["messages"] == [
        asked,
        {"role": "assistant",
         "content": f"Echo: 这是什么？ [image image/png {len(data)} bytes] (1 messages)"},
        {"role": "user", "content": "还有呢？"},
        {"role": "assistant", "content": "Echo: 还有呢？ (3 messages)"},
    ]
    # On the wire: bare base64 (as recorded), in every request that carries the image.
    bodies = async_bodies(api) if mode == "async" else chat_bodies(api)
    wire = {"role": "user", "content": [
        {"type": "text", "text": "这是什么？"}, {"type": "image_url", "image_url": {"url": b64}}]}
    assert [b["messages"][0] for b in bodies] == [wire, wire]
    md = (out / "see.md").read_text("utf-8")
    assert b64 not in md and f"{b64[:40]}… ({len(b64)} characters)" in md


def test_remote_and_data_urls_pass_through(api: MockServer, tmp_path: Path) -> None:
    tiny = base64.b64encode(CAT.read_bytes()).decode("ascii")
    path = write(tmp_path, "urls.yaml", f"""
        model: glm-4v-plus
        messages:
          - role: user
            content:
              - {{type: text, text: 比较}}
              - {{type: image_url, image_url: {{url: "https://example.com/a.jpg"}}}}
              - {{type: image_url, image_url: {{url: "data:image/png;base64,{tiny}"}}}}
    """)
    out = tmp_path / "out"
    result = run(api, path, out)
    assert result.exit_code == 0, result.output
    (body,) = chat_bodies(api)
    assert [p.get("image_url") for p in body["messages"][0]["content"]] == [
        None, {"url": "https://example.com/a.jpg"}, {"url": tiny}]
    t = transcripts(out)["urls"]
    assert t["messages"][0]["content"][2]["image_url"]["url"] == tiny  # as sent
    assert t["messages"][1]["content"] == (
        "Echo: 比较 [image url https://example.com/a.jpg] "
        f"[image image/png {CAT.stat().st_size} bytes] (1 messages)")


def test_a_bad_local_image_is_a_usage_error_before_anything_is_sent(
    api: MockServer, tmp_path: Path
) -> None:
    (tmp_path / "fake.png").write_bytes(b"not an image at all")
    path = write(tmp_path, "bad.yaml", """
        model: glm-4v-flash
        messages:
          - role: user
            content:
              - {type: image_url, image_url: {url: fake.png}}
    """)
    result = run(api, path, tmp_path / "out")
    assert result.exit_code == 2
    assert ("image 'fake.png' is not an image glmrun knows: Zhipu takes JPEG and PNG images "
            "only") in result.stderr
    assert "bad.yaml:6:" in result.stderr and "Traceback" not in result.output
    assert api.requests == []


def test_vision_example_validates_and_runs_green_on_the_mock(tmp_path: Path) -> None:
    path = REPO / "convos/vision.yaml"
    assert glmrun("validate", path).exit_code == 0
    out = tmp_path / "out"
    result = glmrun(path, "--mock", "-o", out)
    assert result.exit_code == 0, result.output
    t = transcripts(out)["vision"]
    assert t["status"] == "passed"
    assert t["messages"][1]["content"] == (
        f"Echo: 图里是什么动物？ [image image/png {CAT.stat().st_size} bytes] (1 messages)")


# -- thinking and JSON replies ---------------------------------------------------------------

THINK_FILE = """
    model: glm-4.5
    params:
      thinking: {type: enabled}
      response_format: {type: json_object}
    messages: [{role: user, content: 上海的人口}]
    expect:
      - is_json: true
      - json_path: $.echo
        value: 上海的人口
      - json_path: $.messages
        value: VALUE
"""


def test_thinking_is_kept_and_folded_and_json_expectations_pass(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "think.yaml", THINK_FILE.replace("VALUE", "1"))
    out = tmp_path / "out"
    result = run(api, path, out)
    assert result.exit_code == 0, result.output
    (body,) = chat_bodies(api)
    assert (body["thinking"], body["response_format"]) == (
        {"type": "enabled"}, {"type": "json_object"})
    t = transcripts(out)["think"]
    reply = '{"echo": "上海的人口", "messages": 1}'
    assert t["messages"][1] == {"role": "assistant", "content": reply,
                                "reasoning_content": "Thinking about: 上海的人口"}
    assert t["calls"][0]["reasoning_content"] == "Thinking about: 上海的人口"
    assert [(e["kind"], e["passed"], e["reason"]) for e in t["expectations"]] == [
        ("is_json", True, "reply is JSON (object)"),
        ("json_path", True, '$.echo == "上海的人口"'),
        ("json_path", True, "$.messages == 1"),
    ]
    md = (out / "think.md").read_text("utf-8")
    assert ("<details><summary>Reasoning</summary>\n\n```text\nThinking about: 上海的人口\n```"
            "\n\n</details>\n\n```text\n" + reply + "\n```") in md


@pytest.mark.slow
def test_a_json_path_that_does_not_hold_fails_the_conversation(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "think.yaml", THINK_FILE.replace("VALUE", "2"))
    out = tmp_path / "out"
    result = run(api, path, out)
    assert result.exit_code == 1, result.output
    t = transcripts(out)["think"]
    assert t["status"] == "failed"
    assert [e["passed"] for e in t["expectations"]] == [True, True, False]
    assert t["expectations"][2]["reason"] == "expected $.messages to equal 2, found 1"
