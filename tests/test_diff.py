"""Comparing two runs: regressions, changed replies, token and latency deltas, exact renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glmrun.output.diff import RunRow, compare_rows, diff_runs, render_markdown, render_text
from glmrun.output.writer import write_transcript


def run(run_id: str, status: str, reply: str | None, tokens: int,
        latencies: tuple[float, ...]) -> dict[str, Any]:
    """The fields the diff reads, around a minimal transcript."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    if reply is not None:
        messages.append({"role": "assistant", "content": reply})
    return {
        "transcript_version": 1,
        "id": run_id,
        "name": run_id,
        "messages": messages,
        "calls": [{"latency_ms": ms} for ms in latencies],
        "usage": {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens},
        "status": status,
    }


def write_run(folder: Path, *transcripts: dict[str, Any]) -> Path:
    for t in transcripts:
        write_transcript(t, folder, formats=("json",))
    return folder


def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    old = write_run(
        tmp_path / "old",
        run("greeting", "passed", "Hello, Ada!\nHow are you?", 30, (400.0,)),
        run("math", "failed", "2 + 2 = 5", 20, (100.0, 150.0)),
        run("poem", "passed", "Roses", 50, (900.0,)),
        run("same", "passed", "unchanged", 10, (100.0,)),
        run("gone", "passed", "bye", 5, (10.0,)),
    )
    new = write_run(
        tmp_path / "new",
        run("greeting", "failed", "Hi Ada.\nHow are you?", 45, (500.0,)),
        run("math", "passed", "2 + 2 = 4", 20, (200.0,)),
        run("poem", "passed", "Roses", 44, (1400.0,)),
        run("same", "passed", "unchanged", 10, (130.0,)),
        run("added", "error", None, 0, ()),
    )
    return old, new


TEXT = """\
glmrun diff: 4 compared, 1 regression, 1 fixed, 2 replies changed, 1 new, 1 missing
tokens 110 -> 119 (+9), latency 1.65 s -> 2.23 s (+580 ms)

change      conversation  status            tokens          latency                     reply
REGRESSION  greeting      passed -> failed  30 -> 45 (+15)  400 ms -> 500 ms (+100 ms)  changed
fixed       math          failed -> passed  20 -> 20 (+0)   250 ms -> 200 ms (-50 ms)   changed
changed     poem          passed            50 -> 44 (-6)   900 ms -> 1.40 s (+500 ms)
new         added         error             0               0 ms
missing     gone          passed

--- greeting (old)
+++ greeting (new)
@@ -1,2 +1,2 @@
-Hello, Ada!
+Hi Ada.
 How are you?

--- math (old)
+++ math (new)
@@ -1 +1 @@
-2 + 2 = 5
+2 + 2 = 4"""


def test_diff_runs_finds_regressions_replies_tokens_and_latency(tmp_path: Path) -> None:
    d = diff_runs(*two_runs(tmp_path))
    assert d.has_regression
    assert [c.id for c in d.regressions] == ["greeting"]
    assert [(c.id, c.label) for c in d.changes] == [
        ("greeting", "REGRESSION"), ("math", "fixed"), ("poem", "changed")]
    assert [c.id for c in d.compared] == ["greeting", "math", "poem", "same"]
    assert [r.id for r in d.new] == ["added"]
    assert [r.id for r in d.missing] == ["gone"]
    greeting = d.changes[0]
    assert (greeting.token_delta, greeting.latency_delta_ms) == (15, 100.0)
    assert (d.old_tokens, d.new_tokens) == (110, 119)
    assert (d.old_latency_ms, d.new_latency_ms) == (1650.0, 2230.0)
    assert not d.compared[3].changed  # only its latency moved


def test_render_text(tmp_path: Path) -> None:
    assert render_text(diff_runs(*two_runs(tmp_path))) == TEXT


MARKDOWN = """\
**glmrun diff: ❌ 1 regression** — 4 compared · 1 regression · 1 fixed · 2 replies changed \
· 1 new · 1 missing · tokens 110 → 119 (+9) · latency 1.65 s → 2.23 s (+580 ms)

| Change | Conversation | Status | Tokens | Latency | Reply |
| --- | --- | --- | --- | --- | --- |
| ❌ regression | `greeting` | passed → failed | 30 → 45 (+15) | 400 ms → 500 ms (+100 ms) | changed |
| ✅ fixed | `math` | failed → passed | 20 → 20 (+0) | 250 ms → 200 ms (-50 ms) | changed |
| ✏️ changed | `poem` | passed | 50 → 44 (-6) | 900 ms → 1.40 s (+500 ms) |  |
| 🆕 new | `added` | error | 0 | 0 ms |  |
| ➖ missing | `gone` | passed |  |  |  |

<details><summary>Reply diffs (2)</summary>

`greeting`

```diff
--- greeting (old)
+++ greeting (new)
@@ -1,2 +1,2 @@
-Hello, Ada!
+Hi Ada.
 How are you?
```

`math`

```diff
--- math (old)
+++ math (new)
@@ -1 +1 @@
-2 + 2 = 5
+2 + 2 = 4
```

</details>"""  # noqa: E501


def test_render_markdown(tmp_path: Path) -> None:
    assert render_markdown(diff_runs(*two_runs(tmp_path))) == MARKDOWN


def test_identical_runs(tmp_path: Path) -> None:
    t = run("same", "passed", "x", 10, (100.0,))
    d = diff_runs(write_run(tmp_path / "a", t), write_run(tmp_path / "b", t))
    assert not d.has_regression
    assert render_text(d) == (
        "glmrun diff: 1 compared, 0 regressions, 0 fixed, 0 replies changed, 0 new, 0 missing\n"
        "tokens 10 -> 10 (+0), latency 100 ms -> 100 ms (+0 ms)\n"
        "\n"
        "no changes"
    )
    assert render_markdown(d).startswith("**glmrun diff: ✅ no changes** — 1 compared")


def row(status: str, reply: str | None = "r") -> RunRow:
    return RunRow(id="c", status=status, reply=reply, total_tokens=1, latency_ms=1.0)


def test_what_counts_as_a_regression() -> None:
    def regresses(old: str, new: str) -> bool:
        return compare_rows([row(old)], [row(new)]).has_regression

    assert regresses("passed", "failed")
    assert regresses("passed", "error")
    assert not regresses("failed", "error")
    assert not regresses("error", "failed")
    assert not regresses("failed", "passed")
    assert not regresses("passed", "passed")
    # a conversation that disappeared or a new one that fails is reported, not a regression
    assert not compare_rows([row("passed")], []).has_regression
    assert not compare_rows([], [row("failed")]).has_regression


def test_a_reply_that_appears_or_differs_only_in_line_endings_is_a_change() -> None:
    d = compare_rows([row("error", None)], [row("error", "")])
    assert d.compared[0].reply_diff == (
        "--- c (old)\n+++ c (new)\n(only line endings or absence differ)")
    d = compare_rows([row("passed", None)], [row("passed", "hi")])
    assert d.compared[0].reply_diff == "--- c (old)\n+++ c (new)\n@@ -0,0 +1 @@\n+hi"


def test_transcripts_are_matched_by_id_not_file_name(tmp_path: Path) -> None:
    old = write_run(tmp_path / "old", run("x", "passed", "a", 1, ()))
    new = tmp_path / "new"
    new.mkdir()
    (new / "renamed.json").write_text((old / "x.json").read_text().replace('"a"', '"b"'))
    d = diff_runs(old, new)
    assert [c.id for c in d.compared] == ["x"]
    assert d.compared[0].reply_changed
