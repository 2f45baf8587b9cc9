"""Batch mode end to end: the real SDK's files/batches calls against the emulator."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from glmrun import api as session
from glmrun.batch.commands import BatchView, view_line
from glmrun.batch.options import BatchEvent, BatchLimits, BatchOptions, describe
from glmrun.batch.state import BatchState
from glmrun.cli.main import main
from glmrun.mock import MockConfig, MockServer
from glmrun.output.summary import RunSummary
from glmrun.output.transcript import load_transcript_schema
from glmrun.run.limits import PollPolicy
from glmrun.run.options import RunOptions

KEY = "test-key"
FAST = PollPolicy(start_s=0.0, factor=1.0, ceiling_s=0.0, timeout_s=None)
# Volatile fields: timings, ids the server makes up, and where the call went.
VOLATILE = frozenset({
    "started_at", "finished_at", "duration_ms", "latency_ms", "queue_ms", "polls", "id",
    "request_id", "task_id", "endpoint", "base_url", "mode", "cached",
})

SUITE = """\
model: glm-4-flash
mode: batch
params: {temperature: 0.5}
vars: {marker: ""}
messages:
  - role: system
    content: 你是一个导游。
  - role: user
    content: "介绍{{ city }}{{ marker }}"
turns:
  - content: "{{ city }}有什么好吃的？"
    expect: [{contains: "{{ city }}"}]
  - 谢谢
cases:
  - {city: 北京}
  - {city: 上海, marker: " [[fault:1301]]"}
  - {city: 成都}
"""

TOOLS = """\
model: glm-4-flash
mode: batch
params:
  tools:
    - type: function
      function:
        name: get_weather
        parameters: {type: object, properties: {city: {type: string}}}
      respond: {result: "{{ args.city }}: 晴"}
messages:
  - role: user
    content: '{{ city }}天气怎么样？[[tool:get_weather {"city": "{{ city }}"}]]'
cases:
  - {city: 杭州}
"""


@pytest.fixture
def server() -> Iterator[MockServer]:
    with MockServer(MockConfig(batch_steps=2)) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def run(
    server: MockServer, paths: list[Path], out: Path, *, mode: str | None = None,
    resume: bool = False, **batch: Any,
) -> RunSummary:
    selection = session.Selection(paths=tuple(paths), mode=mode)
    plans = session.load_plans(selection)
    options = RunOptions(out_dir=out, formats=("json",), resume=resume)
    batch.setdefault("poll", FAST)
    batch.setdefault("quiet_s", 30.0)  # the rounds must not depend on a quiet window
    return session.run_plans(
        plans, session.BackendSettings(base_url=server.base_url), options,
        batch=BatchOptions(selection=selection.saved(), **batch),
    )


def transcripts(out: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("*.json"))
            if p.name != "run.json"}  # the run's manifest


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def posts(server: MockServer, path: str) -> int:
    return sum(1 for r in server.requests if r.method == "POST" and r.path.endswith(path))


def batch_ids(out: Path) -> list[str]:
    return [b["id"] for b in BatchState.load(out).batches()]


# -- a suite in batch mode equals the same suite in sync mode --------------------------------


def test_batch_run_matches_a_sync_run_and_one_failing_line_only_fails_its_conversation(
    server: MockServer, tmp_path: Path,
) -> None:
    paths = [write(tmp_path / "suite", "guide.yaml", SUITE),
             write(tmp_path / "suite", "weather.yaml", TOOLS)]
    batch_summary = run(server, paths, tmp_path / "batch")
    sync_summary = run(server, paths, tmp_path / "sync", mode="sync")

    statuses = batch_summary.statuses()
    assert statuses == {
        "guide--case1": "passed", "guide--case2": "error", "guide--case3": "passed",
        "weather--case1": "passed",
    }
    assert sync_summary.statuses() == statuses
    got, want = transcripts(tmp_path / "batch"), transcripts(tmp_path / "sync")
    failed = got.pop("guide--case2")
    assert failed["error"]["code"] == "1301"
    assert failed["error"]["kind"] == "content_filter"
    assert failed["error"]["status"] == 400
    want.pop("guide--case2")
    for name, transcript in got.items():
        assert transcript["messages"] == want[name]["messages"], name
        assert stable(transcript["calls"]) == stable(want[name]["calls"]), name
        assert transcript["mode"] == "batch"
    # three rounds (guide: three turns; weather: a tool round then the answer), one batch each
    assert posts(server, "/batches") == 3
    assert posts(server, "/files") == 3
    validator = Draft202012Validator(load_transcript_schema())
    for transcript in got.values():
        assert [e.message for e in validator.iter_errors(transcript)] == []
    first = got["guide--case1"]["calls"][0]
    assert first["task_id"] == batch_ids(tmp_path / "batch")[0]
    assert first["id"].startswith("guide--case1--")
    assert first["cached"] is False


def test_known_requests_are_answered_from_the_store_without_a_new_batch(
    server: MockServer, tmp_path: Path,
) -> None:
    paths = [write(tmp_path / "suite", "guide.yaml", SUITE)]
    out = tmp_path / "out"
    run(server, paths, out)
    before = transcripts(out)
    batches = posts(server, "/batches")

    again = run(server, paths, out)

    assert posts(server, "/batches") == batches
    assert again.count("passed") == 2
    after = transcripts(out)
    assert {k: stable(v) for k, v in after.items()} == {k: stable(v) for k, v in before.items()}
    assert all(c["cached"] for c in after["guide--case1"]["calls"])
    assert after["guide--case2"]["error"]["code"] == "1301"  # a lasting error is known too


def test_requests_of_many_plans_at_once_each_carry_their_own_plan_in_the_custom_id(
    server: MockServer, tmp_path: Path,
) -> None:
    """Two files, twelve conversations of three turns, eight at a time: every JSONL line is
    named after the conversation that sent it (its body is that conversation's history)."""
    rows = "".join(f"  - {{n: {i}}}\n" for i in range(6))
    paths = [write(tmp_path / "suite", f"{name}.yaml", (
        f"model: glm-4-flash\nmode: batch\nmessages:\n  - role: user\n"
        f'    content: "{name}问题{{{{ n }}}}"\nturns: ["再说{{{{ n }}}}", "谢谢{{{{ n }}}}"]\n'
        f"cases:\n{rows}")) for name in ("alpha", "beta")]
    out = tmp_path / "out"
    lines: list[dict[str, Any]] = []

    def read_input(event: BatchEvent) -> None:  # kept on disk until the batch is collected
        if event.kind == "submitted":
            entry = BatchState.load(out).batch(event.batch.id)
            assert entry is not None
            text = (out / entry["input"]).read_text(encoding="utf-8")
            lines.extend(json.loads(raw) for raw in text.splitlines())

    summary = run(server, paths, out, limits=BatchLimits(wave=8), on_event=read_input)

    assert summary.count("passed") == 12
    got = transcripts(out)
    assert len(lines) == 36
    per_plan: dict[str, int] = {}
    for line in lines:
        plan_id, _, key = line["custom_id"].rpartition("--")
        sent = line["body"]["messages"]
        assert got[plan_id]["messages"][: len(sent)] == sent, line["custom_id"]
        assert len(key) == 16
        per_plan[plan_id] = per_plan.get(plan_id, 0) + 1
    assert per_plan == {f"{name}--case{i}": 3 for name in ("alpha", "beta") for i in range(1, 7)}
def test_a_stored_lasting_error_comes_back_of_its_own_kind(
    server: MockServer, tmp_path: Path,
) -> None:
    """A reply that ended at the context window has no code: read back from the store it is
    still `context_window`, not reclassified by its (absent) status and code as bad_request."""
    path = write(tmp_path, "full.yaml", "model: glm-4-flash\nmode: batch\nmessages:\n"
                 "  - {role: user, content: 'long [[fault:context_window]]'}\n")
    out = tmp_path / "out"
    run(server, [path], out)
    first = transcripts(out)["full"]["error"]
    batches = posts(server, "/batches")
    run(server, [path], out)
    assert posts(server, "/batches") == batches  # answered from the store
    assert transcripts(out)["full"]["error"] == first
    assert first["kind"] == "context_window" and first["code"] is None


# -- splitting ----------------------------------------------------------------------------


def test_a_round_is_split_into_files_of_at_most_max_lines(
    server: MockServer, tmp_path: Path,
) -> None:
    rows = "\n".join(f"  - {{n: {i}}}" for i in range(5))
    path = write(tmp_path, "five.yaml",
                 "model: glm-4-flash\nmode: batch\nmessages:\n  - role: user\n"
                 "    content: 第{{ n }}个问题\ncases:\n" + rows + "\n")
    events: list[BatchEvent] = []
    summary = run(server, [path], tmp_path / "out", limits=BatchLimits(max_lines=2),
                  on_event=events.append)

    assert summary.count("passed") == 5
    assert posts(server, "/batches") == 3
    submitted = sorted(e.requests for e in events if e.kind == "submitted")
    assert submitted == [1, 2, 2]
    lines = [len(b["lines"]) for b in BatchState.load(tmp_path / "out").batches()]
    assert sorted(lines) == [1, 2, 2]


def test_a_round_is_split_by_size_and_by_model(server: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "models.yaml", """\
mode: batch
model: glm-4-flash
messages: [{role: user, content: "问题{{ n }}"}]
cases: [{n: 1}, {n: 2}]
conversations:
  - name: flash
  - name: air
    model: glm-4-air
""")
    summary = run(server, [path], tmp_path / "out", limits=BatchLimits(max_bytes=300))

    assert summary.count("passed") == 4
    models = sorted((b["model"], len(b["lines"])) for b in BatchState.load(tmp_path / "out")
                    .batches())
    assert models == [("glm-4-air", 1), ("glm-4-air", 1), ("glm-4-flash", 1),
                      ("glm-4-flash", 1)]


def test_a_request_larger_than_a_batch_file_is_glmruns_own_error_not_sent(
    server: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "big.yaml", """
model: glm-4-flash
mode: batch
messages: [{role: user, content: "{{ text }}"}]
cases: [{id: small, text: hi}, {id: big, text: "%s"}]
""" % ("长" * 200))
    summary = run(server, [path], tmp_path / "out", limits=BatchLimits(max_bytes=400))
    ts = transcripts(tmp_path / "out")
    assert ts["big--small"]["status"] == "passed"
    assert ts["big--big"]["error"] == {  # a local condition: no status, no code, its own kind
        "kind": "request_too_large", "status": None, "code": None,
        "message": f"the request is {ts['big--big']['error']['message'].split()[3]} bytes: "
                   "more than a batch file may hold (400 bytes)"}
    sent = [line for b in BatchState.load(tmp_path / "out").batches() for line in b["lines"]]
    assert len(sent) == 1 and summary.exit_code == 3


# -- batches that end without answers -----------------------------------------------------


@pytest.mark.parametrize(("marker", "kind"), [
    ("[[fault:batch_expire]]", "batch_expired"),
    ("[[fault:batch_fail]]", "batch_failed"),
])
def test_an_expired_or_failed_batch_ends_its_conversations_in_error(
    server: MockServer, tmp_path: Path, marker: str, kind: str,
) -> None:
    path = write(tmp_path, "end.yaml", SUITE.replace('" [[fault:1301]]"', f'" {marker}"'))
    summary = run(server, [path], tmp_path / "out")

    assert summary.count("error") == 3
    batch_id = batch_ids(tmp_path / "out")[0]
    for transcript in transcripts(tmp_path / "out").values():
        assert transcript["status"] == "error"
        assert transcript["error"]["kind"] == kind
        assert batch_id in transcript["error"]["message"]
    assert summary.exit_code == 3


def test_a_cancelled_batch_ends_its_conversations_in_error(
    server: MockServer, tmp_path: Path,
) -> None:
    from zhipuai import ZhipuAI

    client = ZhipuAI(api_key=KEY, base_url=server.base_url, max_retries=0)

    def cancel(event: BatchEvent) -> None:
        if event.kind == "submitted":
            client.batches.cancel(event.batch.id)

    path = write(tmp_path, "guide.yaml", SUITE)
    summary = run(server, [path], tmp_path / "out", on_event=cancel)

    assert summary.count("error") == 3
    errors = {t["error"]["kind"] for t in transcripts(tmp_path / "out").values()}
    assert errors == {"batch_cancelled"}
    assert BatchState.load(tmp_path / "out").batches()[0]["status"] == "cancelled"


# -- stopping and collecting later --------------------------------------------------------


def cli(args: list[str]) -> Any:
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.mark.slow
def test_no_wait_submits_and_exits_then_fetch_completes_the_transcripts(
    server: MockServer, tmp_path: Path,
) -> None:
    suite = write(tmp_path / "suite", "guide.yaml", SUITE)
    out = tmp_path / "out"
    submitted = cli(["run", str(suite), "-o", str(out), "--base-url", server.base_url,
                     "--no-wait", "--format", "json"])

    assert submitted.exit_code == 0, submitted.output
    batch_id = batch_ids(out)[0]
    assert f"batch {batch_id}: submitted 3 requests (glm-4-flash)" in submitted.stderr
    assert f"collect with: glmrun batch fetch -o {out}" in submitted.stderr
    assert transcripts(out) == {}

    status = cli(["batch", "status", "-o", str(out)])  # one status check: in_progress
    assert status.exit_code == 0
    entry = BatchState.load(out).batches()[0]
    assert status.stdout == (
        f"{batch_id}  in_progress  1/3 done, 0 failed  model glm-4-flash  "
        f"input {entry['input_file_id']}\n"
    )
    early = cli(["batch", "fetch", batch_id, "-o", str(out)])  # the second: still running
    assert early.exit_code == 0
    assert early.stdout == (f"batch {batch_id} is still in_progress (1/3 done, 1 failed): "
                            "nothing collected yet, try again later\n")
    assert transcripts(out) == {}

    fetched = cli(["batch", "fetch", batch_id, "-o", str(out), "--batch-poll", "0.01"])

    assert fetched.exit_code == 3, fetched.output  # guide--case2 fails with code 1301
    assert f"batch {batch_id}: completed, collected" in fetched.stderr
    got = transcripts(out)
    assert {k: t["status"] for k, t in got.items()} == {
        "guide--case1": "passed", "guide--case2": "error", "guide--case3": "passed"}
    assert got["guide--case2"]["error"]["code"] == "1301"
    assert [m["role"] for m in got["guide--case1"]["messages"]] == [
        "system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert len(batch_ids(out)) == 3  # the first, then one per further turn
    state = BatchState.load(out)
    assert all(b["collected"] for b in state.batches())
    assert not list((out / ".glmrun-batch" / "inputs").iterdir())


@pytest.mark.slow
def test_fetch_reports_an_expired_batch_as_errors(server: MockServer, tmp_path: Path) -> None:
    suite = write(tmp_path, "end.yaml",
                  SUITE.replace('" [[fault:1301]]"', '" [[fault:batch_expire]]"'))
    out = tmp_path / "out"
    assert cli(["run", str(suite), "-o", str(out), "--base-url", server.base_url,
                "--no-wait"]).exit_code == 0
    for _ in range(3):
        cli(["batch", "status", "-o", str(out)])

    fetched = cli(["batch", "fetch", "-o", str(out)])

    assert fetched.exit_code == 3
    kinds = {t["error"]["kind"] for t in transcripts(out).values()}
    assert kinds == {"batch_expired"}
    assert posts(server, "/batches") == 1  # reported, not resubmitted


@pytest.mark.slow
def test_a_run_stopped_after_submission_picks_its_batch_up_again(
    server: MockServer, tmp_path: Path,
) -> None:
    paths = [write(tmp_path / "suite", "guide.yaml", SUITE)]
    out = tmp_path / "out"
    holder: dict[str, Any] = {}

    def stop(event: BatchEvent) -> None:
        if event.kind == "submitted":
            holder["runner"].interrupt()

    selection = session.Selection(paths=tuple(paths))
    stopped = session.run_plans(
        session.load_plans(selection), session.BackendSettings(base_url=server.base_url),
        RunOptions(out_dir=out, formats=("json",), grace_s=5.0), on_runner=lambda r:
        holder.__setitem__("runner", r),
        batch=BatchOptions(selection=selection.saved(), poll=FAST, on_event=stop),
    )
    assert stopped.interrupted
    assert transcripts(out) == {}
    assert [b["collected"] for b in BatchState.load(out).batches()] == [False]

    resumed = run(server, paths, out, resume=True)

    assert resumed.count("passed") == 2
    assert resumed.count("error") == 1
    assert posts(server, "/batches") == 3  # the first batch was adopted, not sent again
    assert all(b["collected"] for b in BatchState.load(out).batches())


# -- small pieces --------------------------------------------------------------------------


def test_event_and_status_lines() -> None:
    from glmrun.backends.batch_api import BatchInfo

    info = BatchInfo("batch-1", "in_progress", "file-1", total=4, completed=2, failed=1)
    assert describe(BatchEvent("progress", info, "glm-4-flash", 4)) == (
        "batch batch-1: in_progress (2/4 done, 1 failed)")
    assert describe(BatchEvent("submitted", info, "glm-4-flash", 4)) == (
        "batch batch-1: submitted 4 requests (glm-4-flash)")
    assert view_line(BatchView(info, "glm-4-flash", 4, False)) == (
        "batch-1  in_progress  2/4 done, 1 failed  model glm-4-flash  input file-1")


def test_fetch_without_state_is_a_usage_error(tmp_path: Path) -> None:
    result = cli(["batch", "fetch", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "no batch state" in result.stderr


def test_no_wait_refuses_the_in_process_emulator(tmp_path: Path) -> None:
    suite = write(tmp_path, "guide.yaml", SUITE)
    result = cli(["run", str(suite), "--mock", "--no-wait", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "--no-wait" in result.stderr


def test_a_long_plan_id_gives_a_short_unique_custom_id() -> None:
    from glmrun.batch.collector import _custom_id

    a, b = _custom_id("x" * 80 + "a", "f" * 64), _custom_id("x" * 80 + "b", "f" * 64)
    assert len(a) == len(b) == 64
    assert a != b
    assert _custom_id("guide--case1", "0123456789abcdef" * 4) == "guide--case1--0123456789abcdef"


def test_the_collector_never_leaves_a_conversation_waiting_after_a_stop(tmp_path: Path) -> None:
    """A stop while conversations wait resolves them (the run then ends without them)."""
    from glmrun.backends.base import RequestIdentity
    from glmrun.backends.batch_api import BatchInfo
    from glmrun.backends.store import ReplyStore
    from glmrun.batch.collector import BatchCollector
    from glmrun.errors import Interrupted
    from glmrun.types import ChatRequest, Reply

    class NeverEnds:
        base_url = "http://nowhere"

        def upload_batch_file(self, path: Path) -> str:
            return "file-1"

        def create_batch(self, file_id: str, metadata: Any) -> BatchInfo:
            return BatchInfo("batch-1", "validating", file_id)

        def get_batch(self, batch_id: str) -> BatchInfo:
            return BatchInfo(batch_id, "in_progress")

        def cancel_batch(self, batch_id: str) -> BatchInfo:
            return BatchInfo(batch_id, "cancelling")

        def download_file(self, file_id: str) -> bytes:
            return b""

        def reply_from_body(self, body: Any, *, latency_ms: float) -> Reply:
            raise AssertionError

        def close(self) -> None:
            pass

    stop = threading.Event()
    collector = BatchCollector(
        state=BatchState.load(tmp_path), store=ReplyStore(tmp_path / "r"),
        options=BatchOptions(poll=PollPolicy(start_s=0.01, timeout_s=None), quiet_s=0.0),
    )
    collector.start(stop)
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            collector.ask(ChatRequest("glm-4-flash", ({"role": "user", "content": "hi"},)),
                          RequestIdentity("hi", 0), NeverEnds())
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=ask)
    worker.start()
    worker.join(0.5)
    assert worker.is_alive()  # submitted, polling a batch that never ends
    stop.set()
    worker.join(5.0)
    collector.close()
    assert not worker.is_alive()
    assert [type(e) for e in outcome] == [Interrupted]
    assert BatchState.load(tmp_path).batches()[0]["collected"] is False


def five_cases(folder: Path) -> Path:
    rows = "\n".join(f"  - {{n: {i}}}" for i in range(5))
    return write(folder, "five.yaml",
                 "model: glm-4-flash\nmode: batch\nmessages:\n  - role: user\n"
                 "    content: 第{{ n }}个问题\nturns: [再说一遍]\ncases:\n" + rows + "\n")


@pytest.mark.slow
def test_waves_bound_the_conversations_at_once_and_no_wait_submits_every_wave(
    server: MockServer, tmp_path: Path,
) -> None:
    path, out = five_cases(tmp_path), tmp_path / "out"
    left: list[BatchEvent] = []
    summary = run(server, [path], out, wait=False, limits=BatchLimits(wave=2),
                  on_event=lambda e: left.append(e) if e.kind == "left" else None)

    assert summary.not_started == 0
    assert summary.statuses() == {}
    assert sorted(e.requests for e in left) == [1, 2, 2]  # one round per wave of 2, 2 and 1
    assert posts(server, "/batches") == 3

    finished = run(server, [path], out, resume=True, limits=BatchLimits(wave=2))

    assert finished.count("passed") == 5
    assert posts(server, "/batches") > 3


def test_a_selection_mixing_modes_runs_both_and_reports_one_summary(
    server: MockServer, tmp_path: Path,
) -> None:
    from glmrun.run.options import NullReporter

    class Counting(NullReporter):
        def __init__(self) -> None:
            self.summaries: list[RunSummary] = []

        def finished(self, summary: RunSummary) -> None:
            self.summaries.append(summary)

    batch_file = write(tmp_path / "suite", "guide.yaml", SUITE)
    sync_file = write(tmp_path / "suite", "hello.yaml",
                      "model: glm-4-flash\nmessages: [{role: user, content: 你好}]\n")
    selection = session.Selection(paths=(batch_file, sync_file))
    reporter = Counting()
    summary = session.run_plans(
        session.load_plans(selection), session.BackendSettings(base_url=server.base_url),
        RunOptions(out_dir=tmp_path / "out", formats=("json",)), reporter,
        batch=BatchOptions(selection=selection.saved(), poll=FAST),
    )

    assert reporter.summaries == [summary]
    assert summary.total == 4
    assert summary.statuses() == {
        "guide--case1": "passed", "guide--case2": "error", "guide--case3": "passed",
        "hello": "passed"}
    assert transcripts(tmp_path / "out")["hello"]["mode"] == "sync"


def test_batch_cancel_then_fetch_ends_the_conversations_as_cancelled(
    server: MockServer, tmp_path: Path,
) -> None:
    suite = write(tmp_path, "guide.yaml", SUITE)
    out = tmp_path / "out"
    assert cli(["run", str(suite), "-o", str(out), "--base-url", server.base_url,
                "--no-wait"]).exit_code == 0
    batch_id = batch_ids(out)[0]

    cancelled = cli(["batch", "cancel", "-o", str(out)])

    assert cancelled.exit_code == 0
    assert cancelled.stdout == f"batch {batch_id}: cancelling\n"
    fetched = cli(["batch", "fetch", "-o", str(out)])
    assert fetched.exit_code == 3
    got = transcripts(out)
    assert sorted(got) == ["guide--case1", "guide--case2", "guide--case3"]
    assert {t["error"]["kind"] for t in got.values()} == {"batch_cancelled"}
    assert all(batch_id in t["error"]["message"] for t in got.values())
