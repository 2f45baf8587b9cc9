"""`--deadline` bounds a conversation even when the server never answers or its stream stalls:
the real SDK against the emulator's `hang`, `stream_stall` and `async_never` faults, with a
`--timeout` far longer than the deadline. Bounds are generous (the run must end well before
the emulator's 30 s hang or the 60 s timeout), never tight timings.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fixtures.e2e.harness import run, transcripts, write

from glmrun.mock import MockServer

SUITE = """
    model: glm-4-flash
    mode: {mode}
    conversations:
      - name: stuck
        messages: [{{role: user, content: "hello [[fault:{fault}]]"}}]
      - name: fine
        messages: [{{role: user, content: hello}}]
"""


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("mode", "fault"), [
    ("sync", "hang"), ("stream", "hang"), ("stream", "stream_stall"), ("async", "hang"),
    ("async", "async_never"),
])
@pytest.mark.slow
def test_a_deadline_ends_a_call_that_never_answers(
    api: MockServer, tmp_path: Path, mode: str, fault: str,
) -> None:
    path = write(tmp_path, "suite.yaml", SUITE.format(mode=mode, fault=fault))
    out = tmp_path / "out"
    started = time.monotonic()
    result = run(api, path, out, "--deadline", "1", "--timeout", "60", "--poll-timeout", "60")
    elapsed = time.monotonic() - started
    assert elapsed < 8, f"took {elapsed:.1f} s: the deadline did not bound the call"
    assert result.exit_code == 3, result.output
    t = transcripts(out)
    assert t["suite--fine"]["status"] == "passed"
    stuck = t["suite--stuck"]
    assert stuck["status"] == "error"
    assert stuck["error"] == {"kind": "deadline", "status": None, "code": None,
                              "message": "conversation deadline of 1 s exceeded"}
    (call,) = stuck["calls"]
    assert call["error"]["kind"] == "deadline" and call["retries"] == []
    if mode == "async":
        assert call["task_id"] is not None or fault == "hang"  # a hung submit has no task yet
    assert "deadline of 1 s exceeded" in result.output
