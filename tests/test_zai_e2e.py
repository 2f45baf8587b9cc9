"""Issue 12, the zai SDK: `--sdk zai` (or $GLMRUN_SDK, or the project's `sdk`) calls the API
through zai-sdk behind the same seam, and `--region intl` reaches Z.ai's platform (api.z.ai,
$ZAI_API_KEY, $ZAI_BASE_URL). CLI → real SDK → emulator; the SDK that sent a request is read
from its `x-request-sdk` header.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import (
    FAST,
    KEY,
    async_bodies,
    chat_bodies,
    glmrun,
    run,
    transcripts,
    write,
)

from glmrun.mock import MockServer

SENT_BY = {"zhipuai": "zhipu-sdk-python", "zai": "z-ai-sdk-python"}
SUITE = """
    model: glm-4.7
    params: {temperature: 0, top_p: 1, max_tokens: 50, watermark_enabled: true,
             tool_stream: false, meta: {a: b}}
    messages:
      - {role: system, content: 简短}
      - {role: user, content: 你好}
"""


def senders(server: MockServer) -> set[str]:
    return {r.headers.get("x-request-sdk", "") for r in server.requests}


def batch_bodies(server: MockServer, old: set[str]) -> list[dict[str, Any]]:
    """The bodies of the batch input files stored since the files `old` (their ids)."""
    lines = [json.loads(line) for f in server.files() if f.purpose == "batch" and f.id not in old
             for line in f.data.decode("utf-8").splitlines() if line.strip()]
    return [line["body"] for line in lines if "method" in line]


def sent(server: MockServer, mode: str, old: set[str]) -> list[dict[str, Any]]:
    if mode == "batch":
        return batch_bodies(server, old)
    return async_bodies(server) if mode == "async" else chat_bodies(server)


@pytest.mark.parametrize("mode", ["sync", "stream", "async", "batch"])
def test_both_sdks_send_the_same_body_in_every_mode(
    api: MockServer, tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.emulator.files, "delete", lambda file_id: None)  # keep batch input
    path = write(tmp_path, "s.yaml", SUITE)
    bodies, replies = {}, {}
    for sdk in ("zhipuai", "zai"):
        old = {f.id for f in api.files()}
        out = tmp_path / sdk
        result = run(api, path, out, "--mode", mode, "--sdk", sdk, "--batch-poll", "0.01")
        assert result.exit_code == 0, result.output
        assert senders(api) == {SENT_BY[sdk]}
        (bodies[sdk],) = sent(api, mode, old)
        replies[sdk] = transcripts(out)["s"]["messages"][-1]
        api.requests.clear()
    assert bodies["zai"] == bodies["zhipuai"]
    assert {k: bodies["zai"][k] for k in ("temperature", "do_sample", "top_p",
                                          "watermark_enabled", "tool_stream")} == {
        "temperature": 0.01, "do_sample": False, "top_p": 0.99, "watermark_enabled": True,
        "tool_stream": False}
    assert replies["zai"] == replies["zhipuai"]
    assert replies["zai"]["reasoning_content"]  # glm-4.7 thinks by default


def test_the_sdk_comes_from_the_environment_or_the_project_file(
    api: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "s.yaml", SUITE)
    monkeypatch.setenv("GLMRUN_SDK", "zai")
    assert run(api, path, tmp_path / "a").exit_code == 0
    assert senders(api) == {SENT_BY["zai"]}
    api.requests.clear()
    assert run(api, path, tmp_path / "b", "--sdk", "zhipuai").exit_code == 0  # the flag wins
    assert senders(api) == {SENT_BY["zhipuai"]}
    api.requests.clear()
    monkeypatch.delenv("GLMRUN_SDK")
    (tmp_path / "glmrun.toml").write_text('sdk = "zai"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert run(api, Path("s.yaml"), Path("c")).exit_code == 0
    assert senders(api) == {SENT_BY["zai"]}


@pytest.mark.parametrize("sdk", ["zhipuai", "zai"])
def test_the_international_region_takes_zai_key_and_base_url(
    server: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sdk: str
) -> None:
    monkeypatch.setenv("ZAI_API_KEY", "zai-key-0123456789")
    monkeypatch.setenv("ZAI_BASE_URL", server.base_url)
    monkeypatch.setenv("ZHIPUAI_API_KEY", "cn-key-0123456789")  # not this region's
    out = tmp_path / "out"
    result = glmrun(write(tmp_path, "s.yaml", SUITE), "-o", out, *FAST, "--sdk", sdk,
                    "--region", "intl")
    assert result.exit_code == 0, result.output
    (request,) = server.requests
    assert request.headers["authorization"] == "Bearer zai-key-0123456789"
    assert senders(server) == {SENT_BY[sdk]}
    if sdk == "zai":  # ZaiClient, the international client, asks for English messages
        assert request.headers["accept-language"] == "en-US,en"
    assert "zai-key-0123456789" not in (out / "s.json").read_text("utf-8")


def test_the_international_region_without_its_key_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)  # the China platform's key is not Z.ai's
    result = glmrun(write(tmp_path, "s.yaml", SUITE), "-o", tmp_path / "out", "--region", "intl")
    assert result.exit_code == 2, result.output
    assert "no API key: set ZAI_API_KEY or put it in the project's .env" in result.output


def test_the_international_dry_run_shows_z_ai(tmp_path: Path) -> None:
    result = glmrun(write(tmp_path, "s.yaml", SUITE), "--dry-run", "--region", "intl")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[0])["base_url"] == "https://api.z.ai/api/paas/v4"


def test_without_zai_sdk_the_error_says_what_to_install(
    api: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "zai", None)  # import zai raises ImportError
    result = run(api, write(tmp_path, "s.yaml", SUITE), tmp_path / "out", "--sdk", "zai")
    assert result.exit_code == 2, result.output
    assert "--sdk zai needs zai-sdk: pip install 'glmrun[zai]'" in result.output
    assert not api.requests


def test_batch_commands_take_the_sdk_too(
    api: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "b.yaml", """
        model: glm-4-flash
        messages: [{role: user, content: 你好}]
    """)
    out = tmp_path / "out"
    monkeypatch.setenv("GLMRUN_SDK", "zai")  # run and batch commands alike
    submitted = glmrun(path, "-o", out, "--base-url", api.base_url, "--mode", "batch",
                       "--no-wait", *FAST)
    assert submitted.exit_code == 0, submitted.output
    assert glmrun("batch", "status", "-o", out).exit_code == 0
    for _ in range(5):  # each status check moves the emulator's batch on: bounded, no sleep
        fetched = glmrun("batch", "fetch", "-o", out, "--batch-poll", "0.01")
        assert fetched.exit_code == 0, fetched.output
        if "collected" in fetched.stderr:
            break
    assert transcripts(out)["b"]["status"] == "passed"
    assert senders(api) == {SENT_BY["zai"]}
    assert {r.path.rsplit("/v4/", 1)[1].split("/")[0] for r in api.requests} >= {
        "files", "batches"}
