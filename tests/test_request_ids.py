"""Issue 12, request_id uniqueness (1231): Zhipu wants every request's request_id unique, so a
file's request_id is sent as written once, then fresh on every further call and retry; a file
without one sends none. Against a scripted server that refuses a used request_id, as the API
does, and fails the first attempt of every call with a 500 (so each call is retried once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import FAST, KEY, glmrun, transcripts, write
from fixtures.scripted_http import completion, scripted_server

from glmrun.run.request_ids import request_id_for

TWO_TURNS = """
    model: glm-4-flash
    params: REQUEST_ID
    messages: [{role: user, content: 一}]
    turns: [二]
"""


def refusing_duplicates() -> tuple[Any, list[str | None]]:
    used: set[str] = set()
    sent: list[str | None] = []
    attempts = {"n": 0}

    def handle(method: str, path: str, body: Any) -> tuple[int, Any]:
        rid = body.get("request_id")
        sent.append(rid)
        if rid is not None and rid in used:
            return 400, {"error": {"code": "1231", "message": f"request_id {rid} 已存在"}}
        if rid is not None:
            used.add(rid)
        attempts["n"] += 1
        if attempts["n"] % 2 == 1:  # every call's first attempt fails: a retry follows
            return 500, {"error": {"code": "500", "message": "internal error"}}
        return 200, completion(f"reply {attempts['n']}", rid)

    return handle, sent


def test_the_ids_of_a_run() -> None:
    assert [request_id_for("job", c, a) for c, a in ((0, 0), (0, 1), (1, 0), (1, 2))] == [
        "job", "job-1-r1", "job-2", "job-2-r2"]
    long = "x" * 64  # Zhipu takes 6 to 64 characters: the suffix shortens the file's part
    assert request_id_for(long, 11, 3) == "x" * 58 + "-12-r3"
    assert len(request_id_for(long, 11, 3)) == 64


def test_every_attempt_sends_a_fresh_request_id_and_the_transcript_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    handle, sent = refusing_duplicates()
    path = write(tmp_path, "t.yaml", TWO_TURNS.replace(
        "REQUEST_ID", "{request_id: job-7}"))
    with scripted_server(handle) as srv:
        result = glmrun(path, "--base-url", srv.base_url, "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    assert sent == ["job-7", "job-7-1-r1", "job-7-2", "job-7-2-r1"]  # no id twice: no 1231
    calls = transcripts(tmp_path / "out")["t"]["calls"]
    assert [c["sent_request_id"] for c in calls] == ["job-7-1-r1", "job-7-2-r1"]
    assert [[r["request_id"] for r in c["retries"]] for c in calls] == [["job-7"], ["job-7-2"]]
    assert [c["request_id"] for c in calls] == ["job-7-1-r1", "job-7-2-r1"]  # the server's


def test_a_file_without_request_id_sends_none_on_any_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    handle, sent = refusing_duplicates()
    path = write(tmp_path, "t.yaml", TWO_TURNS.replace(
        "REQUEST_ID", "{}"))
    with scripted_server(handle) as srv:
        result = glmrun(path, "--base-url", srv.base_url, "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    assert sent == [None, None, None, None]
    calls = transcripts(tmp_path / "out")["t"]["calls"]
    assert [c["sent_request_id"] for c in calls] == [None, None]
    assert [c["request_id"] for c in calls] == ["generated-by-server"] * 2


def test_a_reused_request_id_is_refused_by_such_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server above does refuse a used id: the same file run twice reuses job-7."""
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    handle, sent = refusing_duplicates()
    path = write(tmp_path, "t.yaml", TWO_TURNS.replace(
        "REQUEST_ID", "{request_id: job-7}"))
    with scripted_server(handle) as srv:
        assert glmrun(path, "--base-url", srv.base_url, "-o", tmp_path / "a", *FAST,
                      "--retries", "1").exit_code == 0
        again = glmrun(path, "--base-url", srv.base_url, "-o", tmp_path / "b", *FAST)
    assert again.exit_code == 3, again.output
    assert sent[4:] == ["job-7"]  # refused at once: a 400 is not retried
    error = transcripts(tmp_path / "b")["t"]["error"]
    assert (error["code"], error["status"]) == ("1231", 400)
