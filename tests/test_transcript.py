"""Transcripts: the schema, encoding, atomic writing, reading back, Markdown, redaction."""

from __future__ import annotations

import copy
import datetime
import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from glmrun import errors
from glmrun.output.markdown import md_fence, render_markdown
from glmrun.output.transcript import (
    TRANSCRIPT_SCHEMA_PATH,
    final_reply,
    is_complete,
    iter_transcripts,
    load_transcript_schema,
    read_transcript,
)
from glmrun.output.writer import write_transcript
from glmrun.safety.atomic import encode_json
from glmrun.safety.redaction import Redactor

SHA = "ab" * 32
KEY = "0123456789abcdef.SeCrEtKeY42"


def make_transcript(**overrides: Any) -> dict[str, Any]:
    """A small, complete, schema-valid transcript: one user message, one reply, passed."""
    t: dict[str, Any] = {
        "transcript_version": 1,
        "glmrun_version": "0.1.0",
        "id": "greeting--case1",
        "name": "greeting",
        "description": None,
        "source": {"file": "convos/greeting.yaml", "sha256": SHA, "line": 3},
        "case": {"index": 0, "vars": {"name": "Ada"}},
        "repeat": None,
        "tags": ["smoke"],
        "variables": {"name": "Ada"},
        "model": "glm-4-flash",
        "mode": "sync",
        "base_url": None,
        "params": {"temperature": 0.2},
        "messages": [
            {"role": "user", "content": "Say hello to Ada."},
            {"role": "assistant", "content": "Hello, Ada!"},
        ],
        "calls": [make_call()],
        "tool_results": [],
        "expectations": [
            {"turn": 0, "kind": "contains", "name": None, "spec": {"contains": "Ada"},
             "passed": True, "reason": "found 'Ada'", "diff": None},
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
        "status": "passed",
        "error": None,
        "started_at": "2025-01-02T03:04:05.000Z",
        "finished_at": "2025-01-02T03:04:05.500Z",
        "duration_ms": 500.0,
    }
    t.update(overrides)
    return t


def make_call(**overrides: Any) -> dict[str, Any]:
    call: dict[str, Any] = {
        "turn": 0, "round": 0, "endpoint": "POST /chat/completions",
        "content": "Hello, Ada!", "reasoning_content": None, "tool_calls": [],
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
        "id": "cmpl-1", "request_id": "req-1", "task_id": None,
        "latency_ms": 412.0, "ttft_ms": None, "chunks": None, "chunk_offsets_ms": None,
        "polls": None, "queue_ms": None, "retries": [], "cached": False,
        "started_at": "2025-01-02T03:04:05.010Z",
    }
    call.update(overrides)
    return call


def make_rich_transcript() -> dict[str, Any]:
    """Reasoning, a tool round, a retry, backticks in content, a failing expectation."""
    tool_call = {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    return make_transcript(
        id="weather--paris",
        name="weather",
        description="Uses a | tool.",
        case={"index": 2, "vars": {"id": "paris", "city": "Paris"}},
        repeat={"index": 1, "of": 3},
        tags=[],
        mode="stream",
        messages=[
            {"role": "system", "content": "Answer in ```code``` blocks."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "reasoning_content": "I need the tool.",
             "tool_calls": [tool_call]},
            {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_1"},
            {"role": "assistant", "content": "```\n21 °C\n```"},
        ],
        calls=[
            make_call(content=None, reasoning_content="I need the tool.",
                      tool_calls=[tool_call], finish_reason="tool_calls",
                      usage={"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
                      latency_ms=300.0, ttft_ms=120.0, chunks=5,
                      retries=[{"attempt": 1, "wait_ms": 500.0,
                                "error": {"kind": "rate_limit", "code": "1302", "status": 429,
                                          "message": "Too many requests"}}]),
            make_call(round=1, content="```\n21 °C\n```", request_id="req-2",
                      usage={"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46},
                      latency_ms=1250.0, ttft_ms=90.0, chunks=7),
        ],
        tool_results=[{"turn": 0, "round": 0, "id": "call_1", "name": "get_weather",
                       "arguments": '{"city":"Paris"}', "result": '{"temp": 21}',
                       "error": None, "duration_ms": 3.2}],
        expectations=[
            {"turn": 0, "kind": "equals", "name": "exact", "spec": {"equals": "20 °C"},
             "passed": False, "reason": "reply differs",
             "diff": "--- expected\n+++ actual\n@@ -1 +1 @@\n-20 °C\n+```"},
        ],
        usage={"prompt_tokens": 60, "completion_tokens": 14, "total_tokens": 74},
        status="failed",
    )


def schema_errors(data: Any) -> list[str]:
    validator = Draft202012Validator(load_transcript_schema())
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


def test_schema_is_a_valid_draft_2020_12_schema_found_in_the_package() -> None:
    assert TRANSCRIPT_SCHEMA_PATH.is_file()
    schema = load_transcript_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_schema_property_has_a_description() -> None:
    missing = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    missing.append(f"{where}/{name}")
            for key, sub in node.items():
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}/{i}")

    walk(load_transcript_schema(), "")
    assert missing == []


def test_sample_transcripts_are_valid() -> None:
    assert schema_errors(make_transcript()) == []
    assert schema_errors(make_rich_transcript()) == []


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda t: t.pop("status"), []),
        (lambda t: t.update(mode="batchy"), ["mode"]),
        (lambda t: t.update(surprise=1), []),
        (lambda t: t["calls"][0].pop("latency_ms"), ["calls", 0]),
        (lambda t: t["calls"][0].update(extra_field=1), ["calls", 0]),
        (lambda t: t.update(started_at="2025-01-02 03:04:05"), ["started_at"]),
        (lambda t: t.update(started_at="2025-01-02T03:04:05+08:00"), ["started_at"]),
        (lambda t: t.update(id="../escape"), ["id"]),
        (lambda t: t.update(id=".hidden"), ["id"]),
        (lambda t: t["source"].update(sha256="XYZ"), ["source", "sha256"]),
        (lambda t: t["messages"].append({"role": "robot", "content": "x"}),
         ["messages", 2, "role"]),
        (lambda t: t.update(pass_rate=1.5), ["pass_rate"]),
    ],
)
def test_schema_rejects_what_the_contract_forbids(change: Any, path: list[Any]) -> None:
    t = make_transcript()
    change(t)
    found = schema_errors(t)
    assert found, "the schema accepted a broken transcript"
    assert any(f.startswith(f"{path}:") for f in found), found


def test_schema_accepts_runner_additions_under_extra_and_pass_rate() -> None:
    t = make_transcript(extra={"anything": [1, {"goes": True}]}, pass_rate=0.5)
    assert schema_errors(t) == []


@pytest.mark.parametrize(
    "cls",
    sorted({c for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, errors.ApiError)}, key=lambda c: c.kind),
)
def test_every_api_error_fits_the_schema(cls: type[errors.ApiError]) -> None:
    error = cls("it broke", status=503, code="1234").to_dict()
    t = make_transcript(status="error", error=error)
    t["calls"][0]["retries"] = [{"attempt": 1, "error": error, "wait_ms": 10}]
    assert schema_errors(t) == []


def test_write_transcript_writes_exact_utf8_json_and_markdown(tmp_path: Path) -> None:
    t = make_transcript(messages=[{"role": "user", "content": "你好"},
                                  {"role": "assistant", "content": "你好！"}])
    paths = write_transcript(t, tmp_path / "out")
    assert paths == [tmp_path / "out" / "greeting--case1.json",
                     tmp_path / "out" / "greeting--case1.md"]
    raw = paths[0].read_bytes()
    assert raw.decode("utf-8") == json.dumps(t, ensure_ascii=False, indent=2) + "\n"
    assert "你好！".encode() in raw  # not \u-escaped
    assert list(json.loads(raw)) == list(t)  # keys in the order given
    assert paths[1].read_text(encoding="utf-8") == render_markdown(t)
    assert read_transcript(paths[0]) == t
    assert schema_errors(read_transcript(paths[0])) == []
    assert sorted(os.listdir(tmp_path / "out")) == ["greeting--case1.json", "greeting--case1.md"]


def test_write_transcript_honours_formats_and_their_order(tmp_path: Path) -> None:
    t = make_transcript()
    assert write_transcript(t, tmp_path, formats=("md",)) == [tmp_path / "greeting--case1.md"]
    assert sorted(os.listdir(tmp_path)) == ["greeting--case1.md"]
    assert write_transcript(t, tmp_path, formats=("md", "json")) == [
        tmp_path / "greeting--case1.md", tmp_path / "greeting--case1.json"]
    with pytest.raises(ValueError, match="html"):
        write_transcript(t, tmp_path, formats=("html",))


@pytest.mark.parametrize("bad_id", ["../up", "a/b", "a\\b", ".hidden", "", "x:y"])
def test_write_transcript_refuses_ids_that_are_not_file_names(tmp_path: Path, bad_id: str) -> None:
    with pytest.raises(ValueError, match="cannot be a file name"):
        write_transcript(make_transcript(id=bad_id), tmp_path / "out")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("broken", ["replace", "write"])
def test_a_failed_write_leaves_no_transcript_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, broken, fail)
    with pytest.raises(OSError, match="disk on fire"):
        write_transcript(make_transcript(), tmp_path)
    assert os.listdir(tmp_path) == []


def test_a_failed_json_write_keeps_the_old_transcript_and_leaves_resume_honest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_transcript(status="failed")
    write_transcript(old, tmp_path, formats=("json",))
    before = (tmp_path / "greeting--case1.json").read_bytes()
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if str(dst).endswith(".json"):
            raise OSError("disk on fire")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        write_transcript(make_transcript(), tmp_path)
    assert (tmp_path / "greeting--case1.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["greeting--case1.json", "greeting--case1.md"]


def test_temp_files_of_dead_writers_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    from fixtures.procs import dead_pid as exited

    from glmrun.safety.atomic import sweep_stale_temps

    dead_pid = exited()
    names = {
        f".a.json.{dead_pid}-0.tmp": False,  # killed mid-write: swept
        f".b.md.{dead_pid}-17.tmp": False,
        f".c.json.{os.getpid()}-3.tmp": True,  # this process is writing it
        f".d.json.{os.getppid()}-1.tmp": True,  # another live process is writing it
        "e.json": True, ".notes.tmp": True, f"f.json.{dead_pid}-0.tmp": True,  # not ours
    }
    for name in names:
        (tmp_path / name).write_text("half", encoding="utf-8")
    assert sweep_stale_temps(tmp_path) == 2
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, kept in names.items() if kept)
    assert sweep_stale_temps(tmp_path / "missing") == 0


def test_a_number_json_cannot_hold_is_written_as_null(tmp_path: Path) -> None:
    # input files refuse NaN / infinity; one that still reaches the writer must not lose the
    # transcript (JSON.stringify's rule: null)
    t = make_transcript(duration_ms=float("nan"))
    (path,) = write_transcript(t, tmp_path, formats=("json",))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["duration_ms"] is None
    assert data == json.loads(encode_json({**t, "duration_ms": None}))


@pytest.mark.parametrize("value", [
    {"text": "你好👋 \"quoted\" back\\slash \x00\x1f\x7f \u2028", "tab": "a\tb\nc"},
    {"empty": {}, "list": [], "nested": [{}, [[]], {"a": [1, {"b": None}]}], "tuple": (1, 2)},
    {"big": 2**70, "negative": -(2**63), "bool": True, "null": None, "float": 0.1},
    {"keys": {1: "int", 2.5: "float", False: "bool", None: "null"}},
    {"surrogate": "bad \udc80 byte"},
    {"deep": functools.reduce(lambda inner, _: [inner], range(300), [])},
])
def test_encoding_writes_what_the_standard_library_writes(value: dict[str, Any]) -> None:
    # orjson's output for what it takes, the standard library's for what it refuses (a big
    # integer, non-string keys, a lone surrogate, nesting past 255): byte for byte the file
    # json.dumps(indent=2) wrote
    expected = json.dumps(value, ensure_ascii=False, indent=2) + "\n"
    assert encode_json(value) == expected.encode("utf-8", "backslashreplace")


def test_encoding_keeps_every_float_and_refuses_what_json_refuses() -> None:
    floats = [1e-05, 1e16, 1.5e300, 5e-324, -0.0, 123456789.123, 1 / 3]
    assert json.loads(encode_json({"f": floats})) == {"f": floats}
    with pytest.raises(TypeError):  # not turned into an ISO string behind the caller's back
        encode_json({"at": datetime.datetime(2026, 1, 1)})


def test_a_key_with_a_lone_surrogate_is_still_redacted(tmp_path: Path) -> None:
    key = "0123456789\udc80abcdef"  # from an environment that was not valid UTF-8
    t = make_transcript(messages=[{"role": "user", "content": f"my key is {key}"}])
    json_path, md_path = write_transcript(t, tmp_path, secrets=[key])
    assert read_transcript(json_path)["messages"][0]["content"] == "my key is ***"
    for raw in (json_path.read_bytes(), md_path.read_bytes()):
        assert b"0123456789" not in raw and b"abcdef" not in raw


def test_lone_surrogates_round_trip_through_valid_json(tmp_path: Path) -> None:
    t = make_transcript(messages=[{"role": "assistant", "content": "bad \udc80 byte"}])
    (path,) = write_transcript(t, tmp_path, formats=("json",))
    assert b"\\udc80" in path.read_bytes()
    assert read_transcript(path)["messages"][0]["content"] == "bad \udc80 byte"


def test_is_complete(tmp_path: Path) -> None:
    (path,) = write_transcript(make_transcript(), tmp_path, formats=("json",))
    assert is_complete(path)
    text = path.read_text(encoding="utf-8")
    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2], encoding="utf-8")
    assert not is_complete(truncated)
    no_status = tmp_path / "no-status.json"
    no_status.write_text(json.dumps({k: v for k, v in make_transcript().items()
                                     if k != "status"}), encoding="utf-8")
    assert not is_complete(no_status)
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]", encoding="utf-8")
    assert not is_complete(a_list)
    not_utf8 = tmp_path / "latin1.json"
    not_utf8.write_bytes(b'{"status": "passed\xff"}')
    assert not is_complete(not_utf8)
    assert not is_complete(tmp_path / "missing.json")


def test_iter_transcripts_yields_complete_transcripts_only(tmp_path: Path) -> None:
    write_transcript(make_transcript(id="b"), tmp_path)
    write_transcript(make_transcript(id="a", status="failed"), tmp_path)
    (tmp_path / ".c.json.x1y2.tmp").write_text('{"transcript_version": 1, "sta')
    (tmp_path / ".d.json").write_text(json.dumps(make_transcript(id="d")))
    (tmp_path / "summary.json").write_text('{"passed": 3}')
    (tmp_path / "truncated.json").write_text('{"transcript_version": 1, "sta')
    assert [t["id"] for t in iter_transcripts(tmp_path)] == ["a", "b"]


def test_final_reply_is_the_text_of_the_last_assistant_message() -> None:
    assert final_reply(make_rich_transcript()) == "```\n21 °C\n```"
    parts = [{"type": "text", "text": "one "}, {"type": "image_url", "image_url": {"url": "u"}},
             {"type": "text", "text": "two"}]
    assert final_reply(make_transcript(messages=[{"role": "assistant", "content": parts}])) == (
        "one two")
    assert final_reply(make_transcript(messages=[{"role": "user", "content": "hi"}])) is None


# --- secrets -------------------------------------------------------------------------------


def test_redact() -> None:
    assert Redactor(["abc.def"]).text("key=abc.def and abc.def") == "key=*** and ***"
    assert Redactor(["abc", "abcdef"]).text("abcdef") == "***"  # the longer secret wins
    assert Redactor(["", "zzz"]).text("nothing to hide") == "nothing to hide"


def test_a_key_never_reaches_either_file(tmp_path: Path) -> None:
    tricky = 'quote"back\\slash'  # JSON escapes it: only deep redaction can catch it
    t = make_transcript(
        messages=[{"role": "user", "content": f"my key is {KEY}, ok?"},
                  {"role": "assistant", "content": f"I saw {tricky}"}],
        params={"headers": {"Authorization": f"Bearer {KEY}"}, KEY: "as a key"},
        status="error",
        error={"kind": "auth", "code": "1001", "status": 401,
               "message": f"invalid api key {KEY}"},
    )
    original = copy.deepcopy(t)
    paths = write_transcript(t, tmp_path, secrets=[KEY, tricky, ""])
    assert t == original  # the caller's data is untouched
    json_text = paths[0].read_text(encoding="utf-8")
    md_text = paths[1].read_text(encoding="utf-8")
    for text in (json_text, md_text):
        assert KEY not in text
        assert "SeCrEtKeY42" not in text
        assert "quote" not in text
    back = read_transcript(paths[0])
    assert back["messages"][0]["content"] == "my key is ***, ok?"
    assert back["messages"][1]["content"] == "I saw ***"
    assert back["params"] == {"headers": {"Authorization": "Bearer ***"}, "***": "as a key"}
    assert back["error"]["message"] == "invalid api key ***"  # type: ignore[index]
    assert "```text\nmy key is ***, ok?\n```" in md_text


def test_a_key_that_markdown_would_escape_is_still_redacted(tmp_path: Path) -> None:
    key = "sk_live*key"  # md_inline writes sk\_live\*key: only redacting the data catches it
    t = make_transcript(case={"index": 1, "vars": {"key": key}})
    t["expectations"][0]["reason"] = f"reply mentions {key}"
    md = write_transcript(t, tmp_path, formats=("md",), secrets=[key])[0].read_text()
    assert "live" not in md
    assert "- [x] **contains** · turn 0: reply mentions \\*\\*\\*\n" in md


# --- Markdown ------------------------------------------------------------------------------

SMALL_MD = """\
# ✅ greeting

| Field | Value |
| --- | --- |
| Run | `greeting--case1` |
| Status | ✅ passed |
| Model | `glm-4-flash` |
| Mode | sync |
| Source | `convos/greeting.yaml:3` |
| Case | `case1`: `{"name": "Ada"}` |
| Tags | `smoke` |
| Tokens | 16 (12 prompt + 4 completion) |
| Latency | 412 ms in 1 call |
| Duration | 500 ms |
| Started | 2025-01-02T03:04:05.000Z |

## Conversation

**user**

```text
Say hello to Ada.
```

**assistant**

```text
Hello, Ada!
```

## Calls

| # | Turn | Round | Finish | Tokens | Latency | TTFT | Request | Notes |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| 1 | 0 | 0 | stop | 12 + 4 = 16 | 412 ms | – | `req-1` |  |

## Expectations (1/1 passed)

- [x] **contains** · turn 0: found 'Ada'
"""


def test_markdown_of_a_small_transcript() -> None:
    assert render_markdown(make_transcript()) == SMALL_MD


@pytest.mark.parametrize(("case", "shown"), [
    ({"index": 2, "vars": {"name": "Ada"}}, '`case3`: `{"name": "Ada"}`'),
    ({"index": 0, "vars": {"id": "a b", "name": "Ada"}}, '`a_b`: `{"id": "a b", "name": "Ada"}`'),
    ({"index": 1, "vars": {"id": 7}}, '`7`: `{"id": 7}`'),
])
def test_markdown_names_the_case_as_its_run_id_does(case: dict[str, Any], shown: str) -> None:
    """Issue 13: the third row's run id says case3, and so does its Case row (not 2)."""
    lines = render_markdown(make_transcript(case=case)).splitlines()
    assert [line for line in lines if line.startswith("| Case |")] == [f"| Case | {shown} |"]


RICH_MD = """\
# ❌ weather

Uses a \\| tool.

| Field | Value |
| --- | --- |
| Run | `weather--paris` |
| Status | ❌ failed |
| Model | `glm-4-flash` |
| Mode | stream |
| Source | `convos/greeting.yaml:3` |
| Case | `paris`: `{"id": "paris", "city": "Paris"}` |
| Repeat | 2 of 3 |
| Tokens | 74 (60 prompt + 14 completion) |
| Latency | 1.55 s in 2 calls |
| Duration | 500 ms |
| Started | 2025-01-02T03:04:05.000Z |

## Conversation

**system**

````text
Answer in ```code``` blocks.
````

**user**

```text
Weather in Paris?
```

**assistant**

<details><summary>Reasoning</summary>

```text
I need the tool.
```

</details>

*(no content)*

Tool call `get_weather` (`call_1`):

```json
{
  "city": "Paris"
}
```

**tool** · `get_weather` · `call_1` · 3 ms

```text
{"temp": 21}
```

**assistant**

````text
```
21 °C
```
````

## Calls

| # | Turn | Round | Finish | Tokens | Latency | TTFT | Request | Notes |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| 1 | 0 | 0 | tool\\_calls | 20 + 8 = 28 | 300 ms | 120 ms | `req-1` | 5 chunks, 1 retry |
| 2 | 0 | 1 | stop | 40 + 6 = 46 | 1.25 s | 90 ms | `req-2` | 7 chunks |

Retries:

- call 1, attempt 1: **rate\\_limit** · HTTP 429 · code 1302: Too many requests (waited 500 ms)

## Expectations (0/1 passed)

- [ ] **equals** `exact` · turn 0: reply differs

  ````diff
  --- expected
  +++ actual
  @@ -1 +1 @@
  -20 °C
  +```
  ````
"""


def test_markdown_with_reasoning_tools_retries_backticks_and_a_failed_diff() -> None:
    assert render_markdown(make_rich_transcript()) == RICH_MD


def test_markdown_of_an_error() -> None:
    t = make_transcript(status="error", expectations=[], calls=[],
                        messages=[{"role": "user", "content": "hi"}],
                        error={"kind": "server", "code": None, "status": 503,
                               "message": "upstream | down ```"})
    md = render_markdown(t)
    assert md.startswith("# ⚠️ greeting\n")
    assert md.endswith("## Error\n\n**server** · HTTP 503\n\n````text\nupstream | down ```\n````\n")


def test_fences_outrun_any_backticks_inside() -> None:
    assert md_fence("a ````` b") == "``````\na ````` b\n``````"
    assert md_fence("plain", "text") == "```text\nplain\n```"


def test_hostile_content_cannot_break_the_layout() -> None:
    """Parse the Markdown as GitHub would: every message stays one code block, tables intact."""
    markdown_it = pytest.importorskip("markdown_it")
    hostile = "```\n# not a heading\n| not | a table |\n</details>\n~~~\n````"
    t = make_rich_transcript()
    t["name"] = "a | b ` c"
    t["case"] = {"index": 0, "vars": {"q": "x | y `z`"}}
    t["messages"][1]["content"] = hostile
    t["messages"][2]["reasoning_content"] = hostile
    t["expectations"][0]["reason"] = "got | `this` <b>bold</b>"
    t["expectations"][0]["diff"] = f"-{hostile}\n+ok"
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(render_markdown(t))
    fences = [tok.content for tok in tokens if tok.type == "fence"]
    assert hostile + "\n" in fences  # the user message, verbatim
    assert fences.count(hostile + "\n") == 2  # and the reasoning
    assert f"-{hostile}\n+ok\n" in fences

    def plain(inline: Any) -> str:
        return "".join(child.content for child in inline.children)

    headings = [plain(tokens[i + 1]) for i, tok in enumerate(tokens) if tok.type == "heading_open"]
    assert headings == ["❌ a | b ` c", "Conversation", "Calls", "Expectations (0/1 passed)"]
    cells = [plain(tokens[i + 1]) for i, tok in enumerate(tokens) if tok.type == "td_open"]
    assert cells[cells.index("Case") + 1] == 'case1: {"q": "x | y `z`"}'
    assert len(cells) == 2 * 11 + 2 * 9  # the header table (11 rows), the calls table (2 rows)
    items = [plain(tok) for tok in tokens if tok.type == "inline" and "got" in tok.content]
    assert items == ["[ ] equals exact · turn 0: got | `this` <b>bold</b>"]
    inline_types = {c.type for tok in tokens if tok.type == "inline" for c in tok.children}
    assert "html_inline" not in inline_types
    assert not any(tok.type == "html_block" and "<b>" in tok.content for tok in tokens)


def test_inline_images_are_shortened_in_markdown() -> None:
    url = "data:image/png;base64," + "A" * 1000
    t = make_transcript(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}])
    md = render_markdown(t)
    assert "A" * 100 not in md
    assert '"url": "data:image/png;base64,AAAAAAAAAAAAAAAAAA… (1022 characters)"' in md


def test_a_short_key_is_redacted_in_values_without_mangling_the_transcript(tmp_path: Path) -> None:
    t = make_transcript(messages=[{"role": "user", "content": "x marks the spot"}])
    (path,) = write_transcript(t, tmp_path, formats=("json",), secrets=("x",))
    data = json.loads(path.read_text("utf-8"))
    assert data["messages"][0]["content"] == "*** marks the spot"
    assert set(data) == set(t)  # keys such as "expectations" keep their x


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found | {s for sub in found for s in _subclasses(sub)}


def test_glmruns_own_error_kinds_are_their_own_and_documented() -> None:
    """A local condition never wears an API error's kind; the schema and the README name each."""
    local = {c.kind for c in _subclasses(errors.LocalError)}
    from_api = {c.kind for c in _subclasses(errors.ApiError) - _subclasses(errors.LocalError)}
    assert local and not local & (from_api | {errors.ApiError.kind})
    assert "tool_rounds" in local and len(local) == len(_subclasses(errors.LocalError))
    described = load_transcript_schema()["$defs"]["error"]["description"]
    readme = (Path(__file__).parents[1] / "README.md").read_text("utf-8")
    assert [k for k in sorted(local) if k not in described or f"| `{k}` |" not in readme] == []


def test_usage_records_every_field_in_order() -> None:
    # Usage.to_dict is the transcript's usage object; a field added to Usage must show there
    import dataclasses

    from glmrun.types import Usage

    usage = Usage(1, 2, 3, 4, 5)
    assert list(usage.to_dict().items()) == list(dataclasses.asdict(usage).items())
