"""Suites at scale through the real CLI, SDK and emulator: the account's concurrency limit,
retries, a run stopped by an auth failure, and progress lines when stderr is not a terminal."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from click.testing import Result
from fixtures.e2e.harness import KEY, glmrun, transcripts

from glmrun.mock import MockConfig, MockServer
from glmrun.output.progress import ConsoleReporter
from glmrun.output.summary import RunRow


def write_suite(folder: Path, n: int, content: str = "question {{ n }}") -> Path:
    path = folder / "suite.yaml"
    rows = "".join(f"  - {{n: {i}}}\n" for i in range(n))
    path.write_text(
        "model: glm-4-flash\n"
        "messages:\n"
        f"  - {{role: user, content: {json.dumps(content)}}}\n"
        f"cases:\n{rows}",
        encoding="utf-8",
    )
    return path


def run_with_key(monkeypatch: pytest.MonkeyPatch, key: str, *args: str | Path) -> Result:
    monkeypatch.setenv("ZHIPUAI_API_KEY", key)
    return glmrun(*args)


def chat_requests(server: MockServer) -> int:
    return server.count("/chat/completions")


def test_a_concurrency_limit_is_found_and_respected_with_no_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite, out = write_suite(tmp_path, 60), tmp_path / "out"
    # The default --retry-wait (0.5 s) on purpose: what a user gets, and no conversation may
    # run out of retries while the gate narrows from 16 to the account's 5.
    with MockServer(MockConfig(latency_s=0.05, concurrency_limit=5)) as server:
        result = run_with_key(monkeypatch, KEY, suite, "--base-url", server.base_url, "-o", out,
                        "-j", "16", "--format", "json", "--no-progress", "-q")
        rejected = server.stats.rejected
        sent = chat_requests(server)
    assert result.exit_code == 0, result.output
    assert "60 runs of 1 conversation: 60 passed, 0 failed, 0 errors" in result.stdout
    found = list(transcripts(out).values())
    assert len(found) == 60 and {t["status"] for t in found} == {"passed"}
    assert rejected > 0  # -j 16 against a limit of 5: the adaptive path was exercised
    retries = [r for t in found for call in t["calls"] for r in call["retries"]]
    assert len(retries) == rejected  # every 429 the emulator sent is recorded, once
    assert {(r["error"]["kind"], r["error"]["status"], r["error"]["code"]) for r in retries} \
        == {("rate_limit", 429, "1302")}
    assert sent == 60 + rejected


def test_server_errors_are_retried_then_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite, out = write_suite(tmp_path, 1, "[[fault:500x2]] question {{ n }}"), tmp_path / "out"
    with MockServer() as server:
        result = run_with_key(monkeypatch, KEY, suite, "--base-url", server.base_url, "-o", out,
                        "--retry-wait", "0.01", "--format", "json")
        sent = chat_requests(server)
    assert result.exit_code == 0, result.output
    [t] = transcripts(out).values()
    assert t["status"] == "passed" and sent == 3
    [call] = t["calls"]
    assert [(r["attempt"], r["error"]["kind"], r["error"]["status"]) for r in call["retries"]] \
        == [(1, "server", 500), (2, "server", 500)]
    assert all(0 < r["wait_ms"] <= 20 for r in call["retries"])  # --retry-wait was honoured


def test_an_auth_failure_stops_the_whole_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite, out = write_suite(tmp_path, 20), tmp_path / "out"
    with MockServer(MockConfig(api_key="right")) as server:
        result = run_with_key(monkeypatch, "sk-wrong-0123456789", suite, "--base-url",
                        server.base_url, "-o", out, "-j", "2", "--format", "json",
                        "--no-progress")
        sent = chat_requests(server)
    assert result.exit_code == 3, result.output
    # the first failure stops new work; at most the others in flight
    assert 1 <= sent <= 2 + 2, (sent, result.output)
    found = list(transcripts(out).values())
    assert 1 <= len(found) <= sent, (len(found), sent, result.output)
    assert {(t["status"], t["error"]["kind"], t["error"]["code"]) for t in found} \
        == {("error", "auth", "1000")}
    assert f"{20 - len(found)} not run" in result.stdout
    stop = r"^stopped: .*\(HTTP 401, code 1000\) — authentication failed: check ZHIPUAI_API_KEY"
    assert re.search(stop, result.stdout, re.M), result.stdout


@pytest.mark.slow
def test_progress_lines_when_stderr_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite, out = write_suite(tmp_path, 30), tmp_path / "out"
    with MockServer(MockConfig(latency_s=0.05)) as server:
        result = run_with_key(monkeypatch, KEY, suite, "--base-url", server.base_url, "-o", out,
                        "-j", "2", "--format", "json", "--progress-every", "0.1")
        quiet = run_with_key(monkeypatch, KEY, suite, "--base-url", server.base_url,
                       "-o", tmp_path / "out2", "-j", "2", "--format", "json",
                       "--progress-every", "0.1", "--no-progress")
    assert result.exit_code == 0 and quiet.exit_code == 0, result.output + quiet.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("[progress] ")]
    assert len(lines) >= 2, result.stderr
    pattern = re.compile(
        r"\[progress\] (\d+)/30 done, 0 failed, 0 errors, [0-2] in flight, concurrency 2, "
        r"\d+ tokens, ETA (\d+s|-)"
    )
    done = [int(m.group(1)) for line in lines if (m := pattern.fullmatch(line))]
    assert len(done) == len(lines), lines
    assert done == sorted(done)
    assert "[progress]" not in result.stdout  # results on stdout, progress on stderr
    assert "[progress]" not in quiet.stderr


@pytest.mark.slow
def test_progress_lines_come_at_the_requested_interval_with_many_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite, out = write_suite(tmp_path, 400), tmp_path / "out"
    with MockServer(MockConfig(latency_s=0.05, record=False)) as server:
        result = run_with_key(monkeypatch, KEY, suite, "--base-url", server.base_url, "-o", out,
                        "-j", "10", "--format", "json", "-q", "--progress-every", "0.1")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("[progress] ")]
    assert len(lines) >= 5, result.stderr  # a run of 2 s or more, a line every 0.1-0.2 s


def test_console_reporter_prints_a_plain_progress_line_each_interval() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = ConsoleReporter(out=out, err=err, progress=True, tty=False, interval_s=0)
    reporter.started(3, 0)
    reporter.status(2, 4)
    reporter.conversation_finished(
        RunRow(id="a", name="a", group="a", pass_rate=1.0, status="passed", tokens=7,
               duration_ms=10.0), {}
    )
    reporter.status(1, 4)
    first, second = err.getvalue().splitlines()
    assert first == (
        "[progress] 0/3 done, 0 failed, 0 errors, 2 in flight, concurrency 4, 0 tokens, ETA -"
    )
    head, eta = second.rsplit(" ETA ", 1)
    assert head == "[progress] 1/3 done, 0 failed, 0 errors, 1 in flight, concurrency 4, 7 tokens,"
    assert re.fullmatch(r"\d+s", eta)
    assert out.getvalue().startswith("✔ a  7 tokens  0.01s")
