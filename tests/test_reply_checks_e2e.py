"""Issue 12, the reply's blocks as expectations: `citations` (the web_search results: how many,
one from a domain) and `content_filter` (the safety review's level). CLI → real zhipuai SDK →
a server on loopback: the emulator for web_search, and for content_filter a server answering
with replies written in the shape of Zhipu's documented response (tests/fixtures/replies/),
read by the same code as live replies."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import FAST, KEY, glmrun, run, transcripts, write

from glmrun.mock import MockServer

REPLIES = Path(__file__).parent / "fixtures" / "replies"

SEARCH = """
    model: glm-4.7
    params:
      tools:
        - type: web_search
          web_search: {enable: true, search_query: 今日新闻, search_result: true}
    messages: [{role: user, content: 有什么新闻？}]
    expect:
      - {name: two, citations: 2}
      - {name: three, citations: 3}
      - {name: on the site, citations: 1, domain: example.com}
      - {name: elsewhere, citations: 1, domain: example.org}
      - {name: unflagged, content_filter: 3, compare: at_least}
      - {name: flagged, content_filter: 1, compare: at_most}
"""


def verdicts(transcript: dict[str, Any]) -> list[tuple[str, bool, str]]:
    return [(e["name"], e["passed"], e["reason"]) for e in transcript["expectations"]]


@pytest.mark.parametrize("mode", ["sync", "stream"])
def test_citations_are_checked_on_the_replys_web_search_block(
    api: MockServer, tmp_path: Path, mode: str
) -> None:
    out = tmp_path / "out"
    result = run(api, write(tmp_path, "s.yaml", SEARCH), out, "--mode", mode)
    assert result.exit_code == 1, result.output
    assert verdicts(transcripts(out)["s"]) == [
        ("two", True, "2 citations (at least 2)"),
        ("three", False, "expected at least 3 citations, got 2"),
        ("on the site", True, "2 citations, one from example.com: https://example.com/1"),
        ("elsewhere", False, "no citation from example.org among 2 citations: example.com"),
        ("unflagged", True, "no content_filter level (expected at least 3 (no more severe))"),
        ("flagged", False, "expected content_filter level at most 1 (that severe or more), got "
                           "no content_filter level"),
    ]


def test_a_reply_without_a_web_search_tool_cites_nothing(api: MockServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = write(tmp_path, "n.yaml", """
        model: glm-4.7
        messages: [{role: user, content: 有什么新闻？}]
        expect: [{citations: 1}]
    """)
    result = run(api, path, out)
    assert result.exit_code == 1, result.output
    assert verdicts(transcripts(out)["n"]) == [
        (None, False, "expected at least 1 citation, got 0")]


class _Documented(BaseHTTPRequestHandler):
    """Answers every chat request with the fixture reply: JSON, or SSE when asked to stream."""

    server: _FixtureServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        stream = bool(body.get("stream"))
        data = (REPLIES / ("filtered.sse" if stream else "filtered.json")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if stream else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _FixtureServer(ThreadingHTTPServer):
    daemon_threads = True
    bodies: list[dict[str, Any]]


@pytest.fixture
def documented(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FixtureServer]:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    server = _FixtureServer(("127.0.0.1", 0), _Documented)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


FILTERED = """
    model: glm-4.7
    messages: [{role: user, content: 这个怎么做？}]
    expect:
      - {name: severest, content_filter: 2}
      - {name: the reply, content_filter: 3, role: assistant}
      - {name: the input, content_filter: 2, role: user, compare: at_most}
      - {name: no worse than 3, content_filter: 3, compare: at_least}
      - {name: history, content_filter: 0, role: history, compare: at_least}
      - {name: exactly 1, content_filter: 1}
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["sync", "stream"])
def test_the_content_filter_level_is_checked_on_a_documented_reply(
    documented: _FixtureServer, tmp_path: Path, mode: str
) -> None:
    out = tmp_path / "out"
    base = f"http://127.0.0.1:{documented.server_address[1]}/api/paas/v4"
    result = glmrun(write(tmp_path, "f.yaml", FILTERED), "--base-url", base, "-o", out,
                    "--mode", mode, *FAST)
    assert result.exit_code == 1, result.output
    assert len(documented.bodies) == 1
    transcript = transcripts(out)["f"]
    (call,) = transcript["calls"]
    assert call["content_filter"] == [{"role": "user", "level": 2},
                                      {"role": "assistant", "level": 3}]
    assert verdicts(transcript) == [
        ("severest", True, "content_filter level 2 (expected 2)"),
        ("the reply", True, "content_filter level of assistant 3 (expected 3)"),
        ("the input", True,
         "content_filter level of user 2 (expected at most 2 (that severe or more))"),
        ("no worse than 3", False,
         "expected content_filter level at least 3 (no more severe), got content_filter level 2"),
        ("history", True,
         "no content_filter level of history (expected at least 0 (no more severe))"),
        ("exactly 1", False, "expected content_filter level 1, got content_filter level 2"),
    ]
