"""Ctrl-C, SIGTERM and kill -9 on the real CLI in a child process, then `--resume`: nothing
finished is sent twice, nothing is lost, no transcript is ever half-written.

The emulator runs in the test process and records every request body, so each conversation's
requests are counted where they arrive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import KEY
from fixtures.e2e.harness import transcripts as valid_transcripts

from glmrun.mock import MockConfig, MockServer
from glmrun.output.transcript import is_complete

GLMRUN = str(Path(sys.executable).parent / "glmrun")
N = 40


def write_suite(folder: Path, n: int = N) -> Path:
    """n single-turn conversations `suite--caseNN`, asking "question 0" … "question n-1"."""
    path = folder / "suite.yaml"
    rows = "".join(f"  - {{n: {i}}}\n" for i in range(n))
    path.write_text(
        "model: glm-4-flash\n"
        "messages:\n"
        "  - {role: user, content: \"question {{ n }}\"}\n"
        f"cases:\n{rows}",
        encoding="utf-8",
    )
    return path


def start(suite: Path, server: MockServer, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZHIPU", "PYTEST"))}
    env["ZHIPUAI_API_KEY"] = KEY
    return subprocess.Popen(
        [GLMRUN, str(suite), "--base-url", server.base_url, "-o", str(out), "-j", "4",
         "--format", "json", "--no-progress", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def wait_for_transcripts(out: Path, proc: subprocess.Popen[str], count: int) -> None:
    """Files a child process writes announce themselves to no one: this one wait polls."""
    deadline = time.monotonic() + 10
    while len(list(out.glob("*.json"))) < count:
        assert proc.poll() is None, f"glmrun ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "no transcripts appeared"
        time.sleep(0.02)


def sent_per_conversation(server: MockServer) -> Counter[str]:
    """How many whole chat requests arrived for each conversation, by the question they ask.

    A request cut off by kill -9 before its body was complete (recorded with no body) never
    reached the model and is not counted.
    """
    asked: Counter[str] = Counter()
    for request in server.requests:
        if (request.method == "POST" and request.path.endswith("/chat/completions")
                and request.body is not None):
            asked[request.body["messages"][-1]["content"]] += 1
    return asked


def settle(server: MockServer) -> None:
    """Wait until the emulator has answered (or dropped) every request it received."""
    assert server.wait_until(lambda: not server.stats.in_flight, 5)


def transcripts(out: Path) -> dict[str, dict[str, Any]]:
    """Every *.json in out, each a whole transcript with a final status, valid by the schema."""
    for path in sorted(out.glob("*.json")):
        if path.name == "run.json":  # the run's manifest
            continue
        assert is_complete(path), f"{path.name} is not a complete transcript"
    return valid_transcripts(out)


def question(transcript: dict[str, Any]) -> str:
    return f"question {transcript['case']['vars']['n']}"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.slow
def test_signal_then_resume_sends_every_conversation_exactly_once(
    tmp_path: Path, signum: signal.Signals
) -> None:
    suite, out = write_suite(tmp_path), tmp_path / "out"
    with MockServer(MockConfig(latency_s=0.2)) as server:
        proc = start(suite, server, out)
        wait_for_transcripts(out, proc, 4)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=15)
        assert proc.returncode == 130, stdout + stderr
        assert "--resume" in stderr and "interrupted" in stderr
        first = transcripts(out)
        assert all(t["status"] == "passed" for t in first.values())
        assert 4 <= len(first) < N, "the signal should have cut the run short"
        # Calls in flight when the signal came finished within the grace period and were
        # written: every request sent so far belongs to a conversation with a transcript.
        sent_before = sent_per_conversation(server)
        assert sorted(sent_before) == sorted(question(t) for t in first.values())

        proc = start(suite, server, out, "--resume")
        stdout, stderr = proc.communicate(timeout=15)
        assert proc.returncode == 0, stdout + stderr
        assert f"resuming: {len(first)} of {N} conversations already done" in stderr
        assert f"{len(first)} reused from an earlier run (--resume)" in stdout
        final = transcripts(out)
        assert len(final) == N and all(t["status"] == "passed" for t in final.values())
        for name, data in first.items():  # finished ones were left alone
            assert final[name]["finished_at"] == data["finished_at"]
        assert sent_per_conversation(server) == Counter(f"question {i}" for i in range(N))


@pytest.mark.slow
def test_kill_9_leaves_only_complete_transcripts_and_resume_finishes(tmp_path: Path) -> None:
    suite, out = write_suite(tmp_path), tmp_path / "out"
    with MockServer(MockConfig(latency_s=0.2)) as server:
        proc = start(suite, server, out)
        wait_for_transcripts(out, proc, 3)
        proc.kill()
        proc.communicate(timeout=15)
        assert proc.returncode == -signal.SIGKILL
        settle(server)
        first = transcripts(out)
        assert 3 <= len(first) < N
        for path in out.iterdir():  # a temp file may survive kill -9 mid-write: hidden only
            assert path.suffix == ".json" or (
                path.name.startswith(".") and path.name.endswith(".tmp")
            ), path.name
        sent_before = sent_per_conversation(server)

        proc = start(suite, server, out, "--resume")
        stdout, stderr = proc.communicate(timeout=15)
        assert proc.returncode == 0, stdout + stderr
        final = transcripts(out)
        assert len(final) == N and all(t["status"] == "passed" for t in final.values())
        assert all(p.suffix == ".json" for p in out.iterdir())  # the dead run's temps swept
        sent = sent_per_conversation(server)
        assert set(sent) == {f"question {i}" for i in range(N)}
        for data in first.values():  # written before the kill: never sent again
            assert sent[question(data)] == 1
        # Those in flight at the kill were sent once more by --resume, and only those.
        assert sum(sent.values()) == N + (sum(sent_before.values()) - len(first))


# -- per mode: answered turns and submitted tasks are never sent again ---------------------


def write_two_turns(folder: Path, n: int, latency_ms: int = 300) -> Path:
    """n two-turn conversations; the first turn is slow (300 ms), the second fast, so that a
    signal most often finds conversations between their turns."""
    path = folder / "turns.yaml"
    rows = "".join(f"  - {{n: {i}}}\n" for i in range(n))
    path.write_text(
        "model: glm-4-flash\n"
        "messages:\n"
        f"  - {{role: user, content: \"first {{{{ n }}}} [[latency:{latency_ms}]]\"}}\n"
        "turns: [\"second {{ n }}\"]\n"
        f"cases:\n{rows}",
        encoding="utf-8",
    )
    return path


def sent_per_turn(server: MockServer, mode: str) -> Counter[str]:
    """Chat requests (sync, stream) or task submissions (async) by the turn they ask."""
    path = "/async/chat/completions" if mode == "async" else "/chat/completions"
    asked: Counter[str] = Counter()
    for request in server.requests:
        if request.method == "POST" and request.path.endswith(path) and (
                mode == "async" or "/async/" not in request.path) and request.body is not None:
            asked[request.body["messages"][-1]["content"].split(" [[")[0]] += 1
    return asked


def wait_for_submits(server: MockServer, proc: subprocess.Popen[str], count: int) -> None:
    submitted = server.wait_until(
        lambda: server.count("/async/chat/completions") >= count, 10)
    assert proc.poll() is None, f"glmrun ended early: {proc.communicate()}"
    assert submitted, "no tasks were submitted"


def polls_per_task(server: MockServer) -> Counter[str]:
    return Counter(r.path.rsplit("/", 1)[1] for r in server.requests
                   if r.method == "GET" and "/async-result/" in r.path)


def every_turn(n: int) -> Counter[str]:
    return Counter([*(f"first {i}" for i in range(n)), *(f"second {i}" for i in range(n))])


class Stderr:
    """The child's stderr, read as it comes (to wait for a line before the next signal)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._arrived = threading.Condition()
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._arrived:
                self.lines.append(line)
                self._arrived.notify_all()

    def wait_for(self, text: str, timeout: float = 10) -> None:
        with self._arrived:
            found = self._arrived.wait_for(
                lambda: any(text in line for line in self.lines), timeout)
        assert found, f"no {text!r} in {self.lines}"

    def text(self) -> str:
        self._thread.join(5)
        return "".join(self.lines)


POLL_FAST = ("--poll-interval", "0.02", "--poll-max", "0.02")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("mode", "jobs"), [
    ("sync", 1), ("sync", 8), ("stream", 8), ("async", 1), ("async", 8),
])
@pytest.mark.slow
def test_sigint_then_resume_sends_no_answered_turn_and_no_submitted_task_again(
    tmp_path: Path, mode: str, jobs: int,
) -> None:
    n = 3 * jobs if jobs > 1 else 6  # several waves: the signal comes mid-run
    suite, out = write_two_turns(tmp_path, n), tmp_path / "out"
    with MockServer(MockConfig(async_polls=3)) as server:
        args = ("-j", str(jobs), "--mode", mode, *POLL_FAST)
        proc = start(suite, server, out, *args)
        if mode == "async":  # all tasks are submitted at once (they hold no slot): stop
            wait_for_submits(server, proc, 2)  # while most first turns wait for a slot
        else:
            wait_for_transcripts(out, proc, 1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stdout + stderr
        first = transcripts(out)
        assert all(t["status"] == "passed" for t in first.values()) and len(first) < n
        before = sent_per_turn(server, mode)
        assert max(before.values()) == 1

        proc = start(suite, server, out, *args, "--resume")
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stdout + stderr
        final = transcripts(out)
        assert len(final) == n and all(t["status"] == "passed" for t in final.values())
        assert [len(t["calls"]) for t in final.values()] == [2] * n
        # Every turn was sent exactly once over both runs: none answered (or, in async mode,
        # submitted) before the signal went out again.
        assert sent_per_turn(server, mode) == every_turn(n)
        if mode == "async":  # each task polled to its end (3 × PROCESSING, SUCCESS), once
            assert polls_per_task(server) == Counter(
                {c["task_id"]: 4 for t in final.values() for c in t["calls"]})
        assert not (out / ".glmrun-resume").exists()


@pytest.mark.timeout(60)
@pytest.mark.slow
def test_a_second_sigint_saves_pending_tasks_and_resume_polls_them_instead_of_resubmitting(
    tmp_path: Path,
) -> None:
    n = 8
    suite, out = write_two_turns(tmp_path, n, latency_ms=0), tmp_path / "out"
    with MockServer(MockConfig(async_polls=25)) as server:
        args = ("-j", "8", "--mode", "async", *POLL_FAST)
        proc = start(suite, server, out, *args)
        err = Stderr(proc)
        # every first turn submitted, and polled
        assert server.wait_until(lambda: len(polls_per_task(server)) >= n, 10)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        err.wait_for("stopping")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        assert proc.returncode == 130, err.text()
        assert "abandoning the calls in flight" in err.text()
        saved = [json.loads(p.read_text("utf-8")) for p in (out / ".glmrun-resume").glob("*")]
        assert len(saved) + len(transcripts(out)) == n
        assert any(state["pending"] for state in saved)  # tasks cut off while polled

        proc = start(suite, server, out, *args, "--resume")
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stdout + stderr
        final = transcripts(out)
        assert len(final) == n and all(t["status"] == "passed" for t in final.values())
        assert sent_per_turn(server, "async") == every_turn(n)  # nothing submitted twice
        assert polls_per_task(server) == Counter(  # the saved tasks polled on to their end
            {c["task_id"]: 26 for t in final.values() for c in t["calls"]})


@pytest.mark.timeout(30)
@pytest.mark.slow
def test_a_second_sigint_abandons_hung_calls_at_once(tmp_path: Path) -> None:
    path = tmp_path / "hang.yaml"
    path.write_text(
        "model: glm-4-flash\n"
        "messages: [{role: user, content: \"q {{ n }} [[fault:hang]]\"}]\n"
        "cases: [{n: 1}, {n: 2}, {n: 3}, {n: 4}]\n", encoding="utf-8")
    out = tmp_path / "out"
    with MockServer() as server:
        proc = start(path, server, out, "--timeout", "60")
        err = Stderr(proc)
        assert server.wait_until(lambda: server.stats.in_flight >= 4, 10)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        err.wait_for("stopping")
        assert proc.poll() is None  # the hung calls are given their grace period
        abandoned = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        took = time.monotonic() - abandoned
        assert took < 5, f"{took:.1f} s after the second Ctrl-C"  # the hang lasts 30 s
        assert proc.returncode == 130
        assert "resume with:" in err.text() and transcripts(out) == {}
