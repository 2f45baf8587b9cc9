"""End to end: the CLI, the real zhipuai SDK and the emulator on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.e2e.harness import KEY, REPO, chat_bodies, glmrun, transcripts, write

from glmrun.mock import GREETING_REPLY, MockServer


def test_greeting_with_mock_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = glmrun(REPO / "convos/greeting.yaml", "--mock", "-o", out)
    assert result.exit_code == 0, result.output
    assert GREETING_REPLY in result.stdout
    assert "1 conversation: 1 passed, 0 failed, 0 errors" in result.stdout
    t = transcripts(out)["greeting"]
    assert t["messages"] == [{"role": "user", "content": "你好"},
                             {"role": "assistant", "content": GREETING_REPLY}]
    assert t["status"] == "passed" and t["model"] == "glm-4-flash" and t["mode"] == "sync"
    assert t["source"]["file"].endswith("convos/greeting.yaml") and len(t["source"]["sha256"]) == 64
    md = (out / "greeting.md").read_text("utf-8")
    assert GREETING_REPLY in md and "greeting" in md


def test_exact_requests_on_the_wire_for_a_multi_role_multi_turn_conversation(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "s/chat.yaml", """
        model: glm-4-plus
        params: {temperature: 0.3, max_tokens: 64, stop: ["END"], meta: {k: v}}
        vars: {user: 小明}
        messages:
          - {role: system, content: "你是助手"}
          - {role: user, content: "1+1?"}
          - {role: assistant, content: "2"}
          - {role: user, content: "我是{{ user }}"}
        turns:
          - "记得{{ user }}吗？"
    """)
    out = tmp_path / "out"
    result = glmrun(path, "--base-url", api.base_url, "-o", out)
    assert result.exit_code == 0, result.output
    first, second = chat_bodies(api)
    few_shot = [{"role": "system", "content": "你是助手"}, {"role": "user", "content": "1+1?"},
                {"role": "assistant", "content": "2"}, {"role": "user", "content": "我是小明"}]
    reply1 = "Echo: 我是小明 (4 messages)"
    # The SDK always sends response_format and thinking, as null when unset.
    assert first == {"model": "glm-4-plus", "messages": few_shot, "temperature": 0.3,
                     "max_tokens": 64, "stop": ["END"], "meta": {"k": "v"},
                     "response_format": None, "thinking": None}
    assert second["messages"] == [*few_shot, {"role": "assistant", "content": reply1},
                                  {"role": "user", "content": "记得小明吗？"}]
    t = transcripts(out)["chat"]
    assert [m["content"] for m in t["messages"][-3:]] == [
        reply1, "记得小明吗？", "Echo: 记得小明吗？ (6 messages)"]
    assert t["params"] == {"temperature": 0.3, "max_tokens": 64, "stop": ["END"],
                           "meta": {"k": "v"}}
    assert t["base_url"] == api.base_url
    assert [c["request_id"] is not None for c in t["calls"]] == [True, True]


def test_cases_suites_includes_and_cli_vars(api: MockServer, tmp_path: Path) -> None:
    write(tmp_path, "s/prompts/sys.md", "Answer in {{ lang }}.")
    write(tmp_path, "s/_data/rows.csv", "city\nParis\n北京\n")
    path = write(tmp_path, "s/suite.yaml", """
        model: m
        vars: {lang: English, who: file}
        messages:
          - {role: system, content: "{% include 'prompts/sys.md' %}"}
          - {role: user, content: "{{ city }} by {{ who }}"}
        cases: _data/rows.csv
        conversations:
          - name: en
          - name: zh
            vars: {lang: 中文}
    """)
    out = tmp_path / "out"
    result = glmrun(path, "--base-url", api.base_url, "-o", out, "--var", "who=cli")
    assert result.exit_code == 0, result.output
    ts = transcripts(out)
    assert sorted(ts) == ["suite--en--case1", "suite--en--case2", "suite--zh--case1",
                          "suite--zh--case2"]
    sent = sorted((b["messages"][0]["content"], b["messages"][1]["content"])
                  for b in chat_bodies(api))
    assert sent == [("Answer in English.", "Paris by cli"), ("Answer in English.", "北京 by cli"),
                    ("Answer in 中文.", "Paris by cli"), ("Answer in 中文.", "北京 by cli")]
    assert ts["suite--zh--case2"]["case"] == {"index": 1, "vars": {"city": "北京"}}
    assert ts["suite--zh--case2"]["variables"]["who"] == "cli"


def test_filter_runs_only_matching_conversations(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "f.yaml", """
        model: m
        messages: [{role: user, content: hi}]
        conversations: [{name: alpha}, {name: beta}]
    """)
    out = tmp_path / "out"
    assert glmrun(path, "--base-url", api.base_url, "-o", out, "--filter", "be*").exit_code == 0
    assert list(transcripts(out)) == ["f--beta"]
    result = glmrun(path, "--base-url", api.base_url, "-o", out, "--filter", "zeta")
    assert result.exit_code == 2 and "no conversation matched --filter 'zeta'" in result.stderr


def test_dry_run_prints_the_exact_requests_and_calls_nothing(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "d.yaml", """
        model: glm-4-flash
        mode: stream
        params:
          temperature: 0.5
          tools:
            - type: function
              function: {name: f, parameters: {type: object}}
              respond: {result: ok}
        messages: [{role: user, content: "hi {{ x }}"}]
        turns: ["more"]
    """)
    result = glmrun(path, "--dry-run", "--var", "x=1", "--base-url", api.base_url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "id": "d", "endpoint": "POST /chat/completions (stream)", "base_url": api.base_url,
        "body": {"model": "glm-4-flash", "messages": [{"role": "user", "content": "hi 1"}],
                 "temperature": 0.5,
                 "tools": [{"type": "function", "function": {"name": "f",
                                                             "parameters": {"type": "object"}}}],
                 "stream": True},
        "turns": ["more"],
    }
    assert api.requests == []
    for mode, endpoint in [("async", "POST /async/chat/completions"), ("batch", "POST /files")]:
        line = json.loads(glmrun(path, "--dry-run", "--var", "x=1", "--mode", mode).stdout)
        assert line["endpoint"].startswith(endpoint)
        assert "stream" not in line["body"]


def test_exit_1_when_an_expectation_fails(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", """
        model: m
        messages: [{role: user, content: hi}]
        expect: [{contains: bye}]
    """)
    out = tmp_path / "out"
    result = glmrun(path, "--base-url", api.base_url, "-o", out)
    assert result.exit_code == 1
    assert "✘ e" in result.stdout and "expected reply to contain 'bye'" in result.stdout
    assert transcripts(out)["e"]["status"] == "failed"


def test_exit_3_when_a_conversation_cannot_complete_and_others_still_run(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "x.yaml", """
        model: m
        messages: [{role: user, content: "{{ text }}"}]
        cases: [{text: "fine"}, {text: "bad [[fault:1301]]"}, {text: "also fine"}]
    """)
    out = tmp_path / "out"
    result = glmrun(path, "--base-url", api.base_url, "-o", out)
    assert result.exit_code == 3, result.output
    ts = transcripts(out)
    assert [ts[k]["status"] for k in sorted(ts)] == ["passed", "error", "passed"]
    assert ts["x--case2"]["error"]["code"] == "1301"
    assert ts["x--case2"]["error"]["kind"] == "content_filter"
    assert "⚠ x--case2" in result.stdout


@pytest.mark.parametrize("args", [
    ["--var", "novalue"],
    ["--concurrency", "0"],
    ["--mode", "telepathy"],
    ["--format", "pdf"],
])
def test_exit_2_for_bad_usage(tmp_path: Path, args: list[str]) -> None:
    result = glmrun(REPO / "convos/greeting.yaml", "--mock", "-o", tmp_path / "o", *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_exit_2_for_a_missing_key_with_a_hint(tmp_path: Path) -> None:
    result = glmrun(REPO / "convos/greeting.yaml", "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: no API key: set ZHIPUAI_API_KEY (or ZHIPU_API_KEY) or put it in the project's "
        ".env, or add --mock to run against the built-in emulator")


@pytest.mark.parametrize("command", ["status", "fetch", "cancel"])
def test_batch_commands_without_a_key_do_not_suggest_mock_they_lack(
    tmp_path: Path, command: str
) -> None:
    result = glmrun("batch", command, "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: no API key: set ZHIPUAI_API_KEY (or ZHIPU_API_KEY) or put it in the project's "
        ".env (a key of the account that submitted the batches)")
    assert "--mock" not in result.output  # `glmrun batch ...` has no such option


@pytest.mark.parametrize("name", ["report.html", "out.json", "OUT.MD", "junit.xml"])
def test_an_output_folder_named_like_a_file_is_refused_with_a_hint(
    tmp_path: Path, name: str
) -> None:
    out = tmp_path / name
    result = glmrun(REPO / "convos/greeting.yaml", "--mock", "-o", out)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: Invalid value for '-o' / '--out' (env var: 'GLMRUN_OUT'): {str(out)!r} looks "
        "like a file name, but -o names a folder (made if missing). For the HTML report use "
        "--html FILE, for JUnit --junit FILE.")
    assert not out.exists()


def test_an_existing_file_is_never_an_output_folder_and_an_existing_folder_always_is(
    tmp_path: Path,
) -> None:
    file, folder = tmp_path / "results", tmp_path / "old.json"
    file.write_text("keep", encoding="utf-8")
    folder.mkdir()
    refused = glmrun(REPO / "convos/greeting.yaml", "--mock", "-o", file)
    assert refused.exit_code == 2
    assert refused.stderr.splitlines()[-1].endswith(
        f"{str(file)!r} is a file: -o names a folder. For the HTML report use --html FILE, "
        "for JUnit --junit FILE.")
    assert file.read_text(encoding="utf-8") == "keep"
    # a folder that exists was meant, whatever its name: no refusal
    assert glmrun(REPO / "convos/greeting.yaml", "--mock", "-o", folder).exit_code == 0
    assert (folder / "greeting.json").is_file()


def test_merge_refuses_an_output_folder_named_like_a_file(tmp_path: Path) -> None:
    shard = tmp_path / "shard"
    shard.mkdir()
    result = glmrun("merge", shard, "-o", tmp_path / "all.html")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].endswith(
        "For JUnit use --junit FILE; for the HTML report, then: glmrun report OUT -o FILE.")
    assert not (tmp_path / "all.html").exists()


@pytest.mark.parametrize(("args", "command"), [
    (["valdate", "x.yaml"], "validate"), (["reprot", "out"], "report"), (["bach"], "batch")])
def test_a_misspelled_command_is_named_with_the_closest_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], command: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = glmrun(*args)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: no such command {args[0]!r} — did you mean {command!r}?")


def test_a_path_close_to_a_command_name_is_still_a_path_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "reprot/a.yaml", "model: m\nmessages: [{role: user, content: hi}]\n")
    ran = glmrun("reprot", "--mock", "-o", "o")  # an existing folder: its files run
    assert ran.exit_code == 0, ran.output
    assert (tmp_path / "o" / "a.json").is_file()
    missing = glmrun("diff.yaml", "--mock")  # names a file (a suffix), not a command
    assert missing.exit_code == 2
    assert missing.stderr.strip() == "error: diff.yaml: no such file or directory"


def test_seed_key_name_is_accepted(server: MockServer, monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path) -> None:
    monkeypatch.setenv("ZHIPU_API_KEY", "seed-key")
    result = glmrun(REPO / "convos/greeting.yaml", "--base-url", server.base_url, "-o", tmp_path)
    assert result.exit_code == 0
    assert server.requests[0].headers["authorization"] == "Bearer seed-key"


def test_exit_2_for_an_invalid_file_with_file_line_column(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", """
        model: m
        messages:
          - role: usr
            content: hi
    """)
    result = glmrun(path, "--mock")
    assert result.exit_code == 2
    assert f"{path}:4:11: messages[0].role: 'usr' is not one of" in result.stderr.replace(
        str(path.resolve()), str(path))


def test_validate_reports_every_problem_and_calls_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", """
        model: m
        mode: telepathy
        messages:
          - {role: user, content: "{{ nope }}"}
        params: {tempreature: 1}
    """)
    result = glmrun("validate", path)
    assert result.exit_code == 2
    assert result.stderr.replace(str(path.resolve()), str(path)) == (  # the template's too
        f"{path}:3:7: mode: 'telepathy' is not one of ['sync', 'stream', 'async', 'batch']\n"
        f"{path}:5:27: messages[0].content: undefined variable 'nope' (conversation 'bad')\n"
        f"{path}:6:10: params.tempreature: unknown key 'tempreature' "
        "(did you mean 'temperature'?)\n3 problems found\n")
    ok = glmrun("validate", REPO / "convos")
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: ")


def test_the_api_key_never_appears_in_any_output(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", f"""
        model: m
        messages: [{{role: user, content: "my key is {KEY}"}}]
    """)
    out = tmp_path / "out"
    result = glmrun(path, "--base-url", api.base_url, "-o", out, "--junit", tmp_path / "j.xml",
                    "-v")
    assert result.exit_code == 0
    assert KEY not in result.output
    for f in [*out.iterdir(), tmp_path / "j.xml"]:
        assert KEY not in f.read_text("utf-8"), f


def test_schema_command_prints_the_convo_schema() -> None:
    result = glmrun("schema")
    schema = json.loads(result.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert "messages" in schema["properties"]
    assert json.loads(glmrun("schema", "--transcript").stdout)["title"]


@pytest.mark.parametrize("args", [["--help"], ["validate", str(REPO / "convos")], ["schema"]])
@pytest.mark.slow
def test_help_validate_and_schema_never_import_the_sdk(args: list[str]) -> None:
    code = ("import sys\nfrom glmrun.cli.main import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            "print('zhipuai' in sys.modules, 'httpx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_junit_report_from_a_mixed_run(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "j.yaml", """
        model: m
        messages: [{role: user, content: "{{ t }}"}]
        expect: [{contains: "ok"}]
        cases: [{t: "ok"}, {t: "nope"}, {t: "x [[fault:1261]]"}]
    """)
    junit = tmp_path / "report.xml"
    result = glmrun(path, "--base-url", api.base_url, "-o", tmp_path / "o", "--junit", junit)
    assert result.exit_code == 3
    xml = junit.read_text("utf-8")
    assert 'tests="3"' in xml and 'failures="1"' in xml and 'errors="1"' in xml


def test_diff_command_flags_a_regression(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", """
        model: m
        messages: [{role: user, content: "{{ word }}"}]
        expect: [{contains: "good"}]
    """)
    old, new = tmp_path / "old", tmp_path / "new"
    run = ("--base-url", api.base_url, "-o")
    assert glmrun(path, *run, old, "--var", "word=good").exit_code == 0
    assert glmrun(path, *run, new, "--var", "word=bad").exit_code == 1
    result = glmrun("diff", old, new)
    assert result.exit_code == 1
    assert "REGRESSION  r             passed -> failed" in result.stdout
    assert "-Echo: good (1 messages)\n+Echo: bad (1 messages)" in result.stdout
    md = glmrun("diff", old, new, "--format", "md")
    assert md.exit_code == 1 and "|" in md.stdout
    assert glmrun("diff", old, old).exit_code == 0


@pytest.mark.slow
def test_mock_server_command_serves_the_real_sdk(tmp_path: Path) -> None:
    import os
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "glmrun", "mock-server", "--port", "0"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        base_url = first.strip().rsplit(" ", 1)[-1]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api/paas/v4")
        from zhipuai import ZhipuAI

        client = ZhipuAI(api_key="k", base_url=base_url, max_retries=0)
        reply = client.chat.completions.create(
            model="glm-4-flash", messages=[{"role": "user", "content": "你好"}])
        assert reply.choices[0].message.content == GREETING_REPLY
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_an_empty_folder_is_a_clear_usage_error(tmp_path: Path) -> None:
    result = glmrun(tmp_path, "--mock")
    assert result.exit_code == 2
    assert result.stderr == f"error: no conversation files (*.yaml, *.yml) in {tmp_path}\n"


def test_a_failed_equals_shows_its_diff_in_the_terminal(tmp_path: Path) -> None:
    path = write(tmp_path, "eq.yaml", """
        model: m
        messages: [{role: user, content: hi}]
        expect: [{equals: "Echo: hello (1 messages)"}]
    """)
    result = glmrun(path, "--mock", "-o", tmp_path / "o")
    assert result.exit_code == 1
    reason = "expected reply to equal 'Echo: hello (1 messages)', got 'Echo: hi (1 messages)'"
    assert (f"    ✘ {reason}\n      --- expected\n      +++ reply\n      @@ -1 +1 @@\n"
            "      -Echo: hello (1 messages)\n      +Echo: hi (1 messages)\n") in result.stdout


def test_an_output_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x", "utf-8")
    result = glmrun(REPO / "convos/greeting.yaml", "--mock", "-o", tmp_path / "file" / "out")
    assert result.exit_code == 2
    assert "error: cannot create the transcript folder " in result.stderr
    assert "Traceback" not in result.output


def test_ids_follow_the_path_below_the_folder_run_and_clashes_are_refused(
    tmp_path: Path,
) -> None:
    text = "model: m\nmessages: [{role: user, content: x}]\n"
    a, b = write(tmp_path, "s/a/chat.yaml", text), write(tmp_path, "s/b/chat.yaml", text)
    out = tmp_path / "out"
    result = glmrun(tmp_path / "s", "--mock", "-o", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert sorted(transcripts(out)) == ["a__chat", "b__chat"]
    result = glmrun(a, b, "--mock", "-o", tmp_path / "other")
    assert result.exit_code == 2
    assert result.stderr == (  # a problem of the second file, listed with any others
        f"{b}:1:1: two runs would share the id 'chat' ({a} and {b}): rename one, or run the "
        "folder above both so that their ids carry their folders\n1 problem found\n")
