"""Ctrl-C, SIGTERM and kill -9 on the real CLI in a child process, then `--resume`: nothing
finished is sent twice, nothing is lost, no transcript is ever half-written.

The emulator runs in the test process and records every request body, so each conversation's
requests are counted where they arrive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import KEY
from fixtures.e2e.harness import transcripts as valid_transcripts

from glmrun.mock import MockConfig, MockServer
from glmrun.transcript import is_complete

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
    deadline = time.monotonic() + 5
    while server.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)


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
