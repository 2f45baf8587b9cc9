"""What is sent is what is recorded (issue 12) and rendered once (issue 11): glmrun applies
Zhipu's value rules (the SDK's temperature / top_p / do_sample rewrites, bare base64 images)
itself and renders each case row once, in planning, into the request every mode builds from,
so sync, stream, async and batch send the same bodies for the same file, and the transcript
and --dry-run show them.
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
SENT_PARAMS = {"temperature": 0.01, "do_sample": False, "top_p": 0.99, "max_tokens": 50}


def batch_bodies(server: MockServer) -> list[dict[str, Any]]:
    """The `body` of every line of every batch input file (output files answer `response`)."""
    lines = [json.loads(line) for f in server.files() if f.purpose == "batch"
             for line in f.data.decode("utf-8").splitlines() if line.strip()]
    return [line["body"] for line in lines if "method" in line]


def sent(server: MockServer, mode: str) -> list[dict[str, Any]]:
    if mode == "batch":
        return batch_bodies(server)
    return async_bodies(server) if mode == "async" else chat_bodies(server)


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


# -- one render, one body ---------------------------------------------------------------------

EVERYTHING = f"""
    model: glm-4v-plus
    vars: {{who: ann-0001}}
    params:
      temperature: 0
      top_p: 1
      max_tokens: 50
      user_id: "user-{{{{ who }}}}"
      extra_body: {{watermark_enabled: false}}
      tools:
        - type: function
          function:
            name: get_weather
            parameters: {{type: object, properties: {{city: {{type: string}}}}}}
          respond: {{result: "晴 in {{{{ args.city }}}}"}}
    messages:
      - {{role: system, content: "You help {{{{ who }}}}."}}
      - role: user
        content: '天气？ [[tool:get_weather {{"city": "北京"}}]]'
    turns:
      - content:
          - {{type: text, text: "看 {{{{ who }}}}"}}
          - {{type: image_url, image_url: {{url: "data:image/png;base64,{PNG}"}}}}
"""
# What each mode adds to the same body, and why it may: `stream: true` is the stream mode
# itself; the SDK (sync, stream, async) also sends `response_format: null` and `thinking: null`
# when they are unset, which the API reads as absent (batch lines are written by glmrun and
# leave them out). Nothing else may differ.
MODE_KEYS = {"stream": {"stream": True}, "sync": {}, "async": {}, "batch": {}}
SDK_NULLS = {"response_format": None, "thinking": None}


def test_every_mode_sends_the_same_bodies_the_transcript_and_dry_run_show(
    api: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file with a tool round, a second turn, `respond`, `extra_body`, Zhipu's value rules
    and an image: every request of every mode, the batch JSONL lines' `body` included."""
    monkeypatch.setattr(api.emulator.files, "delete", lambda file_id: None)  # keep batch input
    path = write(tmp_path, "s.yaml", EVERYTHING)
    bodies: dict[str, list[dict[str, Any]]] = {}
    for mode in ("sync", "stream", "async", "batch"):
        out = tmp_path / mode
        seen = len(sent(api, mode))
        result = run(api, path, out, "--mode", mode, "--batch-poll", "0.01")
        assert result.exit_code == 0, result.output
        bodies[mode] = sent(api, mode)[seen:]
        t = transcripts(out)["s"]
        for body in bodies[mode]:
            extra = {**MODE_KEYS[mode], **({} if mode == "batch" else SDK_NULLS)}
            assert {k: body[k] for k in extra} == extra
            for k in extra:
                del body[k]
            # what the transcript records as sent: the model, the params, the history so far
            n = len(body["messages"])
            assert body == {"model": t["model"], "messages": t["messages"][:n], **t["params"]}
    assert len(bodies["sync"]) == 3  # the tool call, the reply after its result, turn 2
    assert bodies["stream"] == bodies["async"] == bodies["batch"] == bodies["sync"]
    first = bodies["sync"][0]
    assert first == {  # rendered, `respond` taken off, extra_body lifted, Zhipu's value rules
        "model": "glm-4v-plus",
        "messages": [{"role": "system", "content": "You help ann-0001."},
                     {"role": "user", "content": '天气？ [[tool:get_weather {"city": "北京"}]]'}],
        **SENT_PARAMS, "user_id": "user-ann-0001", "watermark_enabled": False,
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    }
    assert bodies["sync"][2]["messages"][-1]["content"] == [  # the image as bare base64
        {"type": "text", "text": "看 ann-0001"}, {"type": "image_url", "image_url": {"url": PNG}}]
    dry = glmrun("run", path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output.splitlines()[0])["body"] == first


COUNTED = """
    model: glm-4-flash
    vars: {greeting: hello}
    repeat: 2
    params: {user_id: "user-{{ case_index }}-{{ n }}"}
    messages:
      - {role: system, content: "{{ greeting }}"}
      - {role: user, content: "question {{ n }}"}
    turns:
      - content: "and {{ n }} again"
        expect: [{contains: "{{ n }}"}]
    expect: [{max_tokens: 500}, {not_contains: "{{ greeting }} {{ n }}!"}]
    cases: [{n: 1}, {n: 2}, {n: 3}]
"""
TEMPLATES = 6  # templated strings in COUNTED: user_id, two messages, the turn, two expectations


@pytest.mark.parametrize("mode", ["dry-run", "sync", "stream", "async", "batch"])
def test_each_case_row_is_rendered_once_in_every_mode(
    api: MockServer, tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every template is rendered through Renderer.render_template (plain substitution or
    Jinja2): each templated string runs once per case row — in planning — whatever the mode,
    the repeats share it, and neither the runner, the batch collector nor --dry-run renders
    again."""
    from glmrun.plan import templating

    runs: list[tuple[str, Any]] = []
    real = templating.Renderer.render_template

    def counted(self: Any, text: str, variables: Any) -> str:
        runs.append((text, variables["case_index"]))
        return real(self, text, variables)

    monkeypatch.setattr(templating.Renderer, "render_template", counted)
    monkeypatch.setattr(api.emulator.files, "delete", lambda file_id: None)  # keep batch input
    path = write(tmp_path, "c.yaml", COUNTED)
    if mode == "dry-run":
        result = glmrun("run", path, "--dry-run")
        assert len(result.output.splitlines()) == 6  # 3 rows × 2 repeats
    else:
        result = run(api, path, tmp_path / "out", "--mode", mode, "--batch-poll", "0.01")
        statuses = {t["status"] for t in transcripts(tmp_path / "out").values()}
        assert statuses == {"passed"} and len(transcripts(tmp_path / "out")) == 6
        assert len(sent(api, mode)) == 12  # 6 runs × 2 turns: the repeats sent their own
    assert result.exit_code == 0, result.output
    assert len(runs) == 3 * TEMPLATES and len(set(runs)) == len(runs)
    assert {row for _, row in runs} == {0, 1, 2}
