"""Issue 12, more of the request and the reply: the web_search block (citations) recorded,
finish_reason model_context_window_exceeded as its own error, mcp tools and the video / file /
audio parts accepted and sent as written, user_id's length checked. CLI → real SDK → emulator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.e2e.harness import chat_bodies, glmrun, run, transcripts, write

from glmrun.mock import MockServer

SEARCH = """
    model: glm-4.7
    params:
      tools:
        - type: web_search
          web_search: {enable: true, search_query: 今日新闻, search_result: true}
    messages: [{role: user, content: 有什么新闻？}]
"""


@pytest.mark.parametrize("mode", ["sync", "stream", "batch"])
def test_the_web_search_block_is_recorded(api: MockServer, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out"
    result = run(api, write(tmp_path, "s.yaml", SEARCH), out, "--mode", mode,
                 "--batch-poll", "0.01")
    assert result.exit_code == 0, result.output
    (call,) = transcripts(out)["s"]["calls"]
    assert [(w["refer"], w["title"], w["link"]) for w in call["web_search"]] == [
        ("ref_1", "今日新闻 (1)", "https://example.com/1"),
        ("ref_2", "今日新闻 (2)", "https://example.com/2")]
    assert call["content_filter"] == []


def test_a_context_window_overflow_ends_the_conversation_with_its_own_status(
    api: MockServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    path = write(tmp_path, "c.yaml", """
        model: glm-4.7
        messages: [{role: user, content: "很长 [[fault:context_window]]"}]
    """)
    result = run(api, path, out)
    assert result.exit_code == 3, result.output
    t = transcripts(out)["c"]
    assert t["status"] == "error"
    assert t["error"]["kind"] == "context_window"
    assert t["error"]["message"] == ("the conversation no longer fits the model's context "
                                     "window (finish_reason 'model_context_window_exceeded')")
    assert len(chat_bodies(api)) == 1  # not retried: a longer wait cannot make it fit


def test_mcp_tools_and_media_parts_are_sent_as_written(api: MockServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = write(tmp_path, "m.yaml", """
        model: glm-4.6v
        params:
          user_id: user-0001
          tools:
            - type: mcp
              mcp: {server_label: docs, server_url: "https://mcp.example.com/sse"}
        messages:
          - role: user
            content:
              - {type: text, text: 看看}
              - {type: video_url, video_url: {url: "https://example.com/v.mp4"}}
              - {type: file_url, file_url: {url: "https://example.com/a.pdf"}}
              - {type: input_audio, input_audio: {data: UklGRg==, format: wav}}
    """)
    result = run(api, path, out)
    assert result.exit_code == 0, result.output
    (body,) = chat_bodies(api)
    assert body["tools"] == [{"type": "mcp", "mcp": {
        "server_label": "docs", "server_url": "https://mcp.example.com/sse"}}]
    assert body["user_id"] == "user-0001"
    assert [p["type"] for p in body["messages"][0]["content"]] == [
        "text", "video_url", "file_url", "input_audio"]
    assert body["messages"][0]["content"][3] == {
        "type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


@pytest.mark.parametrize(("user_id", "problem"), [
    ("abc", "params.user_id: 'abc' is too short"),
    ("x" * 129, "params.user_id: 'xxxxxxxx"),
])
def test_user_id_takes_6_to_128_characters(tmp_path: Path, user_id: str, problem: str) -> None:
    path = write(tmp_path, "u.yaml", f"""
        model: glm-4.7
        params: {{user_id: "{user_id}"}}
        messages: [{{role: user, content: hi}}]
    """)
    result = glmrun("validate", path)
    assert result.exit_code == 2
    assert problem in result.output
