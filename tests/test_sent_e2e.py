"""Issue 12, what is sent is what is recorded: glmrun applies Zhipu's value rules (the SDK's
temperature / top_p / do_sample rewrites, bare base64 images) itself, so sync, stream, async and
batch send the same body for the same file, and the transcript and --dry-run show it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import REPO, async_bodies, chat_bodies, glmrun, run, transcripts, write

from glmrun.mock import MockServer
from glmrun.plan import sendrules

PNG = base64.b64encode((REPO / "convos/images/cat.png").read_bytes()).decode("ascii")
SUITE = f"""
    model: glm-4v-plus
    params: {{temperature: 0, top_p: 1, max_tokens: 50}}
    messages:
      - role: user
        content:
          - {{type: text, text: 看}}
          - {{type: image_url, image_url: {{url: "data:image/png;base64,{PNG}"}}}}
"""
SENT_PARAMS = {"temperature": 0.01, "do_sample": False, "top_p": 0.99, "max_tokens": 50}
SENT_MESSAGES = [{"role": "user", "content": [
    {"type": "text", "text": "看"}, {"type": "image_url", "image_url": {"url": PNG}}]}]


def batch_bodies(server: MockServer) -> list[dict[str, Any]]:
    """The `body` of every line of every batch input file (output files answer `response`)."""
    lines = [json.loads(line) for f in server._files.values() if f.purpose == "batch"
             for line in f.data.decode("utf-8").splitlines() if line.strip()]
    return [line["body"] for line in lines if "method" in line]


def sent(server: MockServer, mode: str) -> list[dict[str, Any]]:
    if mode == "batch":
        return batch_bodies(server)
    return async_bodies(server) if mode == "async" else chat_bodies(server)


@pytest.mark.parametrize("mode", ["sync", "stream", "async", "batch"])
def test_every_mode_sends_and_records_the_same_body(
    api: MockServer, tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr(api, "_delete_file", lambda file_id: None)  # keep batch input files
    result = run(api, write(tmp_path, "s.yaml", SUITE), out, "--mode", mode,
                 "--batch-poll", "0.01")
    assert result.exit_code == 0, result.output
    (body,) = sent(api, mode)
    # the SDK's null defaults (response_format, thinking) are what the API reads as unset
    body = {k: v for k, v in body.items() if v is not None and k != "stream"}
    assert body == {"model": "glm-4v-plus", "messages": SENT_MESSAGES, **SENT_PARAMS}
    t = transcripts(out)["s"]
    assert t["params"] == SENT_PARAMS
    assert t["messages"][0] == SENT_MESSAGES[0]


def test_dry_run_shows_the_body_as_sent(tmp_path: Path) -> None:
    result = glmrun("run", write(tmp_path, "s.yaml", SUITE), "--dry-run")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output.splitlines()[0])["body"]
    assert body == {"model": "glm-4v-plus", "messages": SENT_MESSAGES, **SENT_PARAMS}


@pytest.mark.parametrize(("given", "sent_as"), [
    ({"temperature": 0}, {"temperature": 0.01, "do_sample": False}),
    ({"temperature": -1, "do_sample": True}, {"temperature": 0.01, "do_sample": False}),
    ({"temperature": 1}, {"temperature": 0.99}),
    ({"temperature": 0.5, "top_p": 0}, {"temperature": 0.5, "top_p": 0.01}),
    ({"top_p": 1.0}, {"top_p": 0.99}),
    ({"top_p": 0.7, "temperature": 0.3}, {"top_p": 0.7, "temperature": 0.3}),
])
def test_zhipus_sampling_rules(given: dict[str, Any], sent_as: dict[str, Any]) -> None:
    assert sendrules.sampling(given) == sent_as


def test_the_rules_are_the_sdks_own(api: MockServer) -> None:
    """The SDK, given the values as glmrun sends them, changes nothing more."""
    from zhipuai import ZhipuAI

    client = ZhipuAI(api_key="k.s", base_url=api.base_url, max_retries=0)
    for given in ({"temperature": 0}, {"temperature": 1, "top_p": 0}, {"top_p": 1}):
        client.chat.completions.create(model="glm-4-flash", messages=[
            {"role": "user", "content": "x"}], **sendrules.sampling(given))
        raw = chat_bodies(api)[-1]
        client.chat.completions.create(model="glm-4-flash", messages=[
            {"role": "user", "content": "x"}], **given)
        assert chat_bodies(api)[-1] == raw
    assert sendrules.image_url(f"data:image/png;base64,{PNG}") == PNG
    assert sendrules.image_url("https://example.com/a.png") == "https://example.com/a.png"
