"""Issue 12, `--estimate`: every run's first request is counted by Zhipu's tokenizer endpoint
(`POST {base}/tokenizer`, `{model, messages}` → `usage.prompt_tokens`, as docs.bigmodel.cn
documents it) before anything is sent, printed per run and in total with its prompt cost, exit
0, and no chat request is made. Against a scripted server on 127.0.0.1 and against the
emulator's tokenizer, through both SDKs' authentication."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import FAST, KEY, glmrun, write
from fixtures.scripted_http import scripted_server

from glmrun.mock import MockServer

SUITE = """
    model: glm-5.3
    messages:
      - {role: system, content: 简短回答}
      - {role: user, content: "{{ q }}"}
    params:
      tools:
        - type: function
          function: {name: lookup, parameters: {type: object}}
          respond: {result: ok}
        - {type: web_search, web_search: {search_engine: search_std}}
    turns: [再说一次]
    cases: [{id: short, q: 你好}, {id: long, q: 请详细介绍一下北京的历史}]
    conversations:
      - name: plain
      - name: unpriced
        model: glm-4-air
        params: {tools: []}
"""


def tokenizer(method: str, path: str, body: Any) -> tuple[int, Any]:
    if not path.endswith("/tokenizer"):
        return 404, {"error": {"code": "1222", "message": "API 不存在"}}
    chars = sum(len(str(m["content"])) for m in body["messages"])
    return 200, {"id": "tok-1", "created": 1700000000, "request_id": "r-1",
                 "usage": {"prompt_tokens": chars * 10 + len(body.get("tools", []))}}


@pytest.mark.parametrize("sdk", ["zhipuai", "zai"])
def test_estimate_counts_every_run_and_sends_no_chat_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sdk: str
) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    path = write(tmp_path, "s.yaml", SUITE)
    with scripted_server(tokenizer) as srv:
        result = glmrun(path, "--base-url", srv.base_url, "-o", tmp_path / "out", *FAST,
                        "--estimate", "--sdk", sdk)
    assert result.exit_code == 0, result.output
    assert {r.path for r in srv.requests} == {"/api/paas/v4/tokenizer"}  # no chat request
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in srv.requests)
    bodies = {(r.body["model"], r.body["messages"][-1]["content"]): r.body
              for r in srv.requests}
    # the first request as it would be sent; function tools only
    assert bodies["glm-5.3", "你好"] == {
        "model": "glm-5.3",
        "messages": [{"role": "system", "content": "简短回答"},
                     {"role": "user", "content": "你好"}],
        "tools": [{"type": "function",
                   "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    }
    # short: (4 + 2) * 10 + 1 tool = 61; long: (4 + 12) * 10 + 1 = 161; unpriced: no tools
    assert result.stdout.splitlines() == [
        "run                 model      prompt tokens  cost",
        "s--plain--short     glm-5.3               61  ¥0.000488",
        "s--plain--long      glm-5.3              161  ¥0.001288",
        "s--unpriced--short  glm-4-air             60  -",
        "s--unpriced--long   glm-4-air            160  -",
        "total: 4 runs, 442 prompt tokens, prompt cost ¥0.001776 (2 without a price)",
        "(the first request of each run, counted by Zhipu's tokenizer; replies, later turns "
        "and tool rounds are not included; nothing was sent to the model)",
    ]
    assert not (tmp_path / "out").exists()  # nothing ran: no transcripts


def test_a_tokenizer_error_is_an_api_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    path = write(tmp_path, "s.yaml", SUITE)

    def refuse(method: str, path: str, body: Any) -> tuple[int, Any]:
        return 401, {"error": {"code": "1002", "message": "Authorization Token非法"}}

    with scripted_server(refuse) as srv:
        result = glmrun(path, "--base-url", srv.base_url, *FAST, "--estimate", "--limit", "1")
    assert result.exit_code == 3, result.output
    assert "Authorization Token非法" in result.output
    assert len(srv.requests) == 1


@pytest.mark.parametrize("sdk", ["zhipuai", "zai"])
def test_the_emulators_tokenizer_counts_what_its_chat_reply_then_reports(
    api: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sdk: str
) -> None:
    """End to end against the emulator: --estimate sends only tokenizer requests, and each run's
    count is the prompt_tokens the same first request then gets in its chat reply's usage."""
    from fixtures.e2e.harness import run, transcripts

    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    path = write(tmp_path, "e.yaml", """
        model: glm-4-flash
        messages:
          - {role: system, content: 简短回答}
          - {role: user, content: "{{ q }}"}
        cases: [{id: short, q: 你好}, {id: long, q: 请详细介绍一下北京的历史和文化}]
    """)
    estimated = run(api, path, tmp_path / "unused", "--estimate", "--sdk", sdk)
    assert estimated.exit_code == 0, estimated.output
    assert {r.path for r in api.requests} == {"/api/paas/v4/tokenizer"}
    assert not (tmp_path / "unused").exists()
    counts = {line.split()[0]: int(line.split()[2]) for line in estimated.stdout.splitlines()
              if line.startswith("e--")}
    result = run(api, path, tmp_path / "out", "--sdk", sdk)
    assert result.exit_code == 0, result.output
    reported = {rid: t["calls"][0]["usage"]["prompt_tokens"]
                for rid, t in transcripts(tmp_path / "out").items()}
    assert counts == reported and counts["e--long"] > counts["e--short"] > 0
