"""Record / replay / cache: the real SDK against the emulator, then answers from the store."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from glmrun import errors
from glmrun.backends.base import Backend, RequestIdentity
from glmrun.backends.recording import CachingBackend, RecordingBackend, ReplayBackend, store_wrap
from glmrun.backends.scripted import ScriptedBackend, text_reply
from glmrun.backends.store import ReplyStore, request_key
from glmrun.backends.zhipu import ZhipuBackend
from glmrun.cli.main import main
from glmrun.mock import GREETING_REPLY, MockConfig, MockServer
from glmrun.types import ChatRequest, Delta, Reply

ANY_CALL = RequestIdentity("test", 0)  # which run sends a request does not matter here

SECRET = "sk-test-5f3c9a1e-never-in-the-store"
TIMING = frozenset({
    "latency_ms", "ttft_ms", "started_at", "finished_at", "duration_ms", "chunk_offsets_ms",
    "base_url",
})


def user(text: str, mode: str = "sync", **params: object) -> ChatRequest:
    return ChatRequest(model="glm-4-flash", messages=({"role": "user", "content": text},),
                       params=params, mode=mode)  # type: ignore[arg-type]


def zhipu(server: MockServer) -> ZhipuBackend:
    return ZhipuBackend(api_key=SECRET, base_url=server.base_url)


def collect(backend: Backend, request: ChatRequest) -> tuple[Reply, list[Delta]]:
    seen: list[Delta] = []
    return backend.complete(request, seen.append, identity=ANY_CALL), seen


def run_async(backend: Backend, request: ChatRequest) -> Reply:
    ticket = backend.submit(request, identity=ANY_CALL)
    for _ in range(50):
        reply = backend.poll(ticket)
        if reply is not None:
            return dataclasses.replace(reply, task_id=ticket.task_id)
    raise AssertionError("the task never finished")


def same_recorded_fields(a: Reply, b: Reply) -> None:
    for name in ("content", "reasoning_content", "tool_calls", "finish_reason", "usage", "id",
                 "request_id", "model", "chunks"):
        assert getattr(a, name) == getattr(b, name), name


@pytest.fixture
def store(tmp_path: Path) -> ReplyStore:
    return ReplyStore(tmp_path / "rec")


# -- the backends over the real SDK ---------------------------------------------------------


def test_replay_gives_back_sync_stream_and_async_replies_without_the_network(
    store: ReplyStore,
) -> None:
    sync_req = user("你好")
    stream_req = user("tell me [[chunk_delay:1]]", "stream", thinking={"type": "enabled"})
    async_req = user("later please", "async")
    with MockServer(MockConfig(async_polls=1)) as server:
        rec = RecordingBackend(zhipu(server), store)
        sync_live = rec.complete(sync_req, identity=ANY_CALL)
        stream_live, live_deltas = collect(rec, stream_req)
        async_live = run_async(rec, async_req)
        rec.close()
    # the emulator is gone: any network call would fail
    replay = ReplayBackend(ReplyStore(store.root))
    sync_again = replay.complete(sync_req, identity=ANY_CALL)
    stream_again, replayed_deltas = collect(replay, stream_req)
    async_again = run_async(replay, async_req)

    assert sync_live.content == GREETING_REPLY
    same_recorded_fields(sync_live, sync_again)
    same_recorded_fields(stream_live, stream_again)
    same_recorded_fields(async_live, async_again)
    assert async_again.task_id == async_live.task_id  # the task id survives the replay
    assert replayed_deltas == live_deltas and len(live_deltas) > 5
    assert any(d.reasoning_content for d in live_deltas)  # thinking pieces kept apart
    assert stream_again.ttft_ms is not None and stream_again.ttft_ms <= stream_again.latency_ms
    assert not sync_live.cached and sync_again.cached and stream_again.cached
    assert async_again.cached


def test_stream_replay_calls_on_delta_once_per_recorded_delta_in_order(
    store: ReplyStore,
) -> None:
    request = user("pieces", "stream")
    deltas = [{"content": "one ", "reasoning_content": ""},
              {"content": "", "reasoning_content": "hmm"},
              {"content": "two", "reasoning_content": ""}]
    reply = Reply(content="one two", finish_reason="stop", reasoning_content="hmm", chunks=4)
    from glmrun.backends.store import reply_to_json

    store.put(request_key(request), 0, request, reply_to_json(reply, deltas=deltas))
    got, seen = collect(ReplayBackend(store), request)
    assert seen == [Delta("one ", ""), Delta("", "hmm"), Delta("two", "")]
    assert (got.content, got.reasoning_content, got.chunks) == ("one two", "hmm", 4)


def test_repeated_identical_requests_get_their_own_recordings_in_order(
    store: ReplyStore,
) -> None:
    request = user("same question")
    with MockServer() as server:
        server.script({"content": "first answer"}, {"content": "second answer"})
        rec = RecordingBackend(zhipu(server), store)
        live = [rec.complete(request, identity=ANY_CALL).content for _ in range(2)]
    replay = ReplayBackend(ReplyStore(store.root))
    again = [replay.complete(request, identity=ANY_CALL).content for _ in range(2)]
    assert live == again == ["first answer", "second answer"]
    # asked more often than recorded: the first recording answers
    assert replay.complete(request, identity=ANY_CALL).content == "first answer"


def test_replay_miss_names_model_last_user_message_key_and_the_fix(store: ReplyStore) -> None:
    request = ChatRequest(model="glm-4-plus", messages=(
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "a question that is much longer than sixty characters, "
                                    "so the message has to shorten it"},
    ))
    with pytest.raises(errors.ReplayMissError) as info:
        ReplayBackend(store).complete(request, identity=ANY_CALL)
    message = str(info.value)
    assert message == (
        f"no recording in {store.root} for this sync request to glm-4-plus (last user message "
        "'a question that is much longer than sixty characters, so th…'; "
        f"key {request_key(request)}); re-record with --record {store.root}"
    )
    assert info.value.kind == "replay_miss" and not info.value.retryable
    with pytest.raises(errors.ReplayMissError):
        ReplayBackend(store).submit(dataclasses.replace(request, mode="async"), identity=ANY_CALL)


def test_the_api_key_never_reaches_the_store(store: ReplyStore) -> None:
    with MockServer(MockConfig(api_key=SECRET, async_polls=0)) as server:
        rec = RecordingBackend(zhipu(server), store)
        rec.complete(user("hello"), identity=ANY_CALL)
        collect(rec, user("hello", "stream"))
        run_async(rec, user("hello", "async"))
        assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(files) == 3
    for path in files:
        assert SECRET not in path.read_text(encoding="utf-8")


def test_cache_calls_the_api_once_then_answers_from_the_store(store: ReplyStore) -> None:
    requests = [user("你好"), user("stream me", "stream"), user("你好")]
    with MockServer(MockConfig(async_polls=0)) as server:
        first = CachingBackend(zhipu(server), store)
        live = [collect(first, r) for r in requests]
        live.append((run_async(first, user("task", "async")), []))
        calls = server.count() + server.count("/async/chat/completions")
        second = CachingBackend(zhipu(server), ReplyStore(store.root))
        cached = [collect(second, r) for r in requests]
        cached.append((run_async(second, user("task", "async")), []))
        assert server.count() + server.count("/async/chat/completions") == calls == 4
    for (a, a_deltas), (b, b_deltas) in zip(live, cached, strict=True):
        same_recorded_fields(a, b)
        assert a_deltas == b_deltas
        assert not a.cached and b.cached


def test_cache_gives_a_failed_calls_slot_to_its_retry(store: ReplyStore) -> None:
    inner = ScriptedBackend()
    inner.enqueue(errors.ServerError("boom", status=500), text_reply("after retry"))
    cache = CachingBackend(inner, store)
    request = user("flaky")
    with pytest.raises(errors.ServerError):
        cache.complete(request, identity=ANY_CALL)
    assert cache.complete(request, identity=ANY_CALL).content == "after retry"
    assert store.path(request_key(request), 0).is_file()
    assert not store.path(request_key(request), 1).exists()


def test_cache_records_a_new_sample_for_a_repeat_beyond_the_recordings(
    store: ReplyStore,
) -> None:
    request = user("sample")
    recording = RecordingBackend(ScriptedBackend(lambda r: text_reply("one")), store)
    recording.complete(request, identity=ANY_CALL)
    cache = CachingBackend(ScriptedBackend(lambda r: text_reply("two")), ReplyStore(store.root))
    assert [cache.complete(request, identity=ANY_CALL).content for _ in range(2)] == ["one", "two"]


def test_at_most_one_of_record_replay_cache(tmp_path: Path) -> None:
    assert store_wrap() is None
    with pytest.raises(errors.InputError, match="--record and --cache cannot be combined"):
        store_wrap(record=tmp_path, cache=tmp_path)


# -- end to end: the CLI, the runner and the real SDK against the emulator -----------------

SUITE = """\
model: glm-4-flash
conversations:
  - name: hello
    messages: [{role: user, content: 你好}]
    expect: [{contains: 智谱}]
  - name: streamed
    mode: stream
    params: {thinking: {type: enabled}}
    messages: [{role: user, content: 讲个故事}]
  - name: chat
    messages:
      - {role: system, content: 你是一个友好的助手。}
      - {role: user, content: 我叫小明。}
    turns:
      - content: 我叫什么？
        expect: [{contains: 我叫什么}]
  - name: again
    repeat: 2
    messages: [{role: user, content: 你好}]
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE, encoding="utf-8")
    return path


@pytest.fixture
def live_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockServer]:
    monkeypatch.setenv("ZHIPUAI_API_KEY", SECRET)
    with MockServer(MockConfig(api_key=SECRET)) as server:
        yield server


def glmrun(*args: str | Path) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def transcripts(out: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("*.json"))
            if p.name != "run.json"}  # the run's manifest


def without(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    return value


def calls_of(data: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [call for t in data.values() for call in t["calls"]]


@pytest.mark.slow
def test_cli_record_then_replay_without_key_or_emulator_gives_the_same_transcripts(
    suite: Path, tmp_path: Path, live_server: MockServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec, out1, out2 = tmp_path / "rec", tmp_path / "out1", tmp_path / "out2"
    result = glmrun("run", suite, "--base-url", live_server.base_url, "--record", rec,
                    "-o", out1, "-j", "1", "--format", "json", "--no-progress")
    assert result.exit_code == 0, result.output
    recorded_calls = live_server.count()
    assert recorded_calls == 6  # hello, streamed, chat ×2 turns, again ×2
    live_server.stop()
    monkeypatch.delenv("ZHIPUAI_API_KEY")
    monkeypatch.delenv("ZHIPU_API_KEY", raising=False)

    def no_emulator(self: MockServer) -> MockServer:
        raise AssertionError("--replay must not start the emulator")

    monkeypatch.setattr(MockServer, "start", no_emulator)
    result = glmrun("run", suite, "--replay", rec, "--mock", "-o", out2, "-j", "1",
                    "--format", "json", "--no-progress")
    assert result.exit_code == 0, result.output
    assert live_server.count() == recorded_calls

    first, second = transcripts(out1), transcripts(out2)
    assert sorted(first) == sorted(second) == [
        "suite--again--r1", "suite--again--r2", "suite--chat", "suite--hello", "suite--streamed",
    ]
    assert [c["cached"] for c in calls_of(first)] == [False] * 6
    assert [c["cached"] for c in calls_of(second)] == [True] * 6
    assert without(second, TIMING | {"cached"}) == without(first, TIMING | {"cached"})
    streamed = next(t for t in second.values() if t["name"] == "streamed")
    assert streamed["calls"][0]["reasoning_content"]
    # the repeats kept their own recordings (the emulator gave each its own id)
    repeat_ids = [t["calls"][0]["id"] for t in second.values() if t["name"] == "again"]
    assert len(set(repeat_ids)) == 2
    for path in rec.rglob("*.json"):
        assert SECRET not in path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_cli_async_tasks_replay_with_their_recorded_task_ids(
    tmp_path: Path, live_server: MockServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    convo = tmp_path / "later.yaml"
    convo.write_text("model: glm-4-flash\nmode: async\nmessages: [{role: user, content: 你好}]\n",
                     encoding="utf-8")
    rec, out1, out2 = tmp_path / "rec", tmp_path / "out1", tmp_path / "out2"
    fast = ("--poll-interval", "0.01", "--format", "json", "--no-progress")
    assert glmrun("run", convo, "--base-url", live_server.base_url, "--record", rec,
                  "-o", out1, *fast).exit_code == 0
    live_server.stop()
    monkeypatch.delenv("ZHIPUAI_API_KEY")
    assert glmrun("run", convo, "--replay", rec, "-o", out2, *fast).exit_code == 0
    live, replayed = transcripts(out1)["later"]["calls"], transcripts(out2)["later"]["calls"]
    assert live[0]["polls"] == 3 and replayed[0]["polls"] == 1  # 2 PROCESSING, then SUCCESS
    assert without(replayed, TIMING | {"cached", "polls", "queue_ms"}) == \
        without(live, TIMING | {"cached", "polls", "queue_ms"})
    assert live[0]["task_id"] and live[0]["content"] == GREETING_REPLY


def test_cli_replay_of_an_unrecorded_request_is_an_error_transcript_and_exit_3(
    suite: Path, tmp_path: Path,
) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    out = tmp_path / "out"
    result = glmrun("run", suite, "--replay", rec, "-o", out, "--format", "json",
                    "--filter", "hello", "--no-progress")
    assert result.exit_code == 3, result.output
    data = transcripts(out)["suite--hello"]
    assert data["status"] == "error"
    assert data["error"]["kind"] == "replay_miss"
    assert data["error"]["message"].startswith(f"no recording in {rec} for this sync request "
                                               "to glm-4-flash (last user message '你好'; key ")
    assert data["error"]["message"].endswith(f"re-record with --record {rec}")


def test_cli_cache_calls_the_emulator_once_then_never(
    suite: Path, tmp_path: Path, live_server: MockServer,
) -> None:
    cache = tmp_path / "cache"
    args = ("run", suite, "--base-url", live_server.base_url, "--cache", cache, "-j", "1",
            "--format", "json", "--no-progress")
    assert glmrun(*args, "-o", tmp_path / "out1").exit_code == 0
    assert live_server.count() == 6
    assert glmrun(*args, "-o", tmp_path / "out2").exit_code == 0
    assert live_server.count() == 6
    first, second = transcripts(tmp_path / "out1"), transcripts(tmp_path / "out2")
    assert [c["cached"] for c in calls_of(first)] == [False] * 6
    assert [c["cached"] for c in calls_of(second)] == [True] * 6
    assert without(second, TIMING | {"cached"}) == without(first, TIMING | {"cached"})


@pytest.mark.parametrize("combo", [("--record", "--replay"), ("--replay", "--cache"),
                                   ("--record", "--cache")])
def test_cli_rejects_combined_store_options(
    suite: Path, tmp_path: Path, combo: tuple[str, str],
) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    result = CliRunner().invoke(main, ["run", str(suite), "--mock", combo[0], str(folder),
                                       combo[1], str(folder)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {combo[0]} and {combo[1]} cannot be combined: choose one\n"


RECORDED = Path(__file__).parent / "fixtures" / "recorded"  # recorded by an earlier glmrun


@pytest.mark.parametrize("mode", ["sync", "stream", "async"])
def test_a_recording_made_by_an_earlier_glmrun_still_replays(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tests/fixtures/recorded/store was recorded (`--mock --record`, every mode) before the
    backend seam took a request identity: its keys must still match what glmrun sends."""
    monkeypatch.delenv("ZHIPUAI_API_KEY", raising=False)
    out = tmp_path / "out"
    result = glmrun("run", RECORDED / "legacy.yaml", "--mode", mode, "--replay",
                    RECORDED / "store", "-o", out, "--format", "json", "--no-progress",
                    "--poll-interval", "0.01")
    assert result.exit_code == 0, result.output
    replayed = transcripts(out)
    assert sorted(replayed) == [f"legacy--case{c}--r{r}" for c in (1, 2) for r in (1, 2)]
    recorded = {}
    for path in (RECORDED / "store").rglob("*.json"):
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry["request"]["mode"] == mode:
            recorded[entry["key"], entry["occurrence"]] = entry["reply"]["id"]
    got = sorted(c["id"] for t in replayed.values() for c in t["calls"])
    assert got == sorted(recorded.values())  # every recorded reply, each exactly once
    assert all(c["cached"] for t in replayed.values() for c in t["calls"])
