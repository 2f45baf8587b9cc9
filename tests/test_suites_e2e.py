"""Suites that live in git, end to end: stable ids as a suite grows, run.json, diff and
--baseline catching regressions, --last-failed, --repeat, --limit, the summary files, and the
model matrix. The CLI, the real SDK and the emulator on loopback."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.e2e.harness import glmrun, run, transcripts, write

from glmrun.mock import MockServer
from glmrun.output import manifest, matrix
from glmrun.output.diff import diff_runs

PAD = """
    models: [glm-4-flash]
    messages: [{role: user, content: "hi {{ user }}"}]
    cases: _data/rows.csv
    expect: [{contains: "hi"}]
    conversations:
      - name: formal
"""


def rows(n: int) -> str:
    return "user\n" + "".join(f"u{i}\n" for i in range(1, n + 1))


def read_manifest(out: Path) -> dict[str, Any]:
    data = manifest.read(out)
    assert data is not None
    return data


def test_a_growing_suite_compares_every_old_run_and_reports_only_new_ones(
    api: MockServer, tmp_path: Path
) -> None:
    """~4 s: the grown suite really runs its 41 conversations (every axis grows at once)."""
    suite = tmp_path / "s"
    write(suite, "_data/rows.csv", rows(9))
    write(suite, "pad.yaml", PAD)
    old, new = tmp_path / "old", tmp_path / "new"
    assert run(api, suite, old).exit_code == 0
    before = sorted(read_manifest(old)["runs"][i]["id"] for i in range(9))
    assert before == sorted(f"pad--formal--case{i}@glm-4-flash" for i in range(1, 10))

    # a 10th row, a second conversation, a second file in a subfolder, a second model
    write(suite, "_data/rows.csv", rows(10))
    write(suite, "pad.yaml", PAD.replace("[glm-4-flash]", "[glm-4-flash, glm-4-plus]")
          + "      - name: casual\n")
    write(suite, "sub/extra.yaml", "model: glm-4-flash\nmessages: [{role: user, content: x}]\n")
    result = run(api, suite, new, "--baseline", old)
    assert result.exit_code == 0, result.output
    d = diff_runs(old, new)
    assert [c.id for c in d.compared] == before
    assert d.missing == () and not d.changes
    added = {r.id for r in d.new}
    assert len(added) == 2 * 2 * 10 + 1 - 9
    assert "pad--formal--case10@glm-4-flash" in added and "sub__extra" in added
    assert "pad--casual--case1@glm-4-plus" in added
    assert "glmrun diff: 9 compared, 0 regressions, 0 fixed, 0 replies changed, 32 new, " \
           "0 missing" in result.stdout
    assert glmrun("diff", old, new).exit_code == 0


def test_a_changed_reply_that_fails_makes_diff_and_baseline_exit_1(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "r.yaml", """
        model: m
        messages: [{role: user, content: "{{ word }}"}]
        expect: [{contains: good}]
    """)
    old, new = tmp_path / "old", tmp_path / "new"
    assert run(api, path, old, "--var", "word=good").exit_code == 0
    result = run(api, path, new, "--var", "word=bad", "--baseline", old)
    assert result.exit_code == 1
    assert "REGRESSION  r             passed -> failed" in result.stdout
    assert "-Echo: good (1 messages)\n+Echo: bad (1 messages)" in result.stdout
    assert result.stderr.splitlines()[-2] == (
        f"fail: against --baseline {old}: 1 regression: passed before, not now")
    diffed = glmrun("diff", old, new)
    assert diffed.exit_code == 1
    assert diffed.stderr == "fail: 1 regression: passed before, not now\n"
    fixed = run(api, path, tmp_path / "fixed", "--var", "word=good", "--baseline", new)
    assert fixed.exit_code == 0, fixed.output  # failed → passed is a fix, not a regression
    assert "fixed   r             failed -> passed" in fixed.stdout


@pytest.mark.slow
def test_diff_fails_on_nothing_compared_missing_runs_and_a_folder_of_yaml(
    api: MockServer, tmp_path: Path
) -> None:
    suite = tmp_path / "s"
    write(suite, "a.yaml", "model: m\nmessages: [{role: user, content: a}]\n")
    write(suite, "b.yaml", "model: m\nmessages: [{role: user, content: b}]\n")
    both, only_a, other = tmp_path / "both", tmp_path / "only_a", tmp_path / "other"
    assert run(api, suite, both).exit_code == 0
    assert run(api, suite / "a.yaml", only_a).exit_code == 0
    write(tmp_path, "o/c.yaml", "model: m\nmessages: [{role: user, content: c}]\n")
    assert run(api, tmp_path / "o", other).exit_code == 0

    missing = glmrun("diff", both, only_a)
    assert missing.exit_code == 1
    assert missing.stderr == ("fail: 1 run of the old folder missing from the new one "
                              "(--allow-missing accepts that)\n")
    assert glmrun("diff", both, only_a, "--allow-missing").exit_code == 0
    assert glmrun("diff", only_a, both).exit_code == 0  # a new run is reported, not a failure

    nothing = glmrun("diff", only_a, other, "--allow-missing")
    assert nothing.exit_code == 1
    assert nothing.stderr == "fail: nothing compared: the two folders share no run id\n"

    yaml = glmrun("diff", suite, both)
    assert yaml.exit_code == 2
    assert yaml.stderr == (f"error: {suite} is not a glmrun output folder: it has no run.json "
                           "and no transcripts (give the -o folder of a run, not the "
                           "conversation files)\n")
    assert run(api, suite, tmp_path / "x", "--baseline", suite).exit_code == 2
    # a run that passes still fails against a baseline it does not cover
    narrowed = run(api, suite, tmp_path / "y", "--filter", "a", "--baseline", both)
    assert narrowed.exit_code == 1
    assert run(api, suite, tmp_path / "z", "--filter", "a", "--baseline", both,
               "--allow-missing").exit_code == 0


def test_diff_reads_a_folder_written_before_run_json(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "model: m\nmessages: [{role: user, content: hi}]\n")
    old, new = tmp_path / "old", tmp_path / "new"
    assert run(api, path, old).exit_code == 0
    (old / "run.json").unlink()  # as an older glmrun left it: transcripts only
    assert run(api, path, new).exit_code == 0
    d = diff_runs(old, new)
    assert [c.id for c in d.compared] == ["r"] and not d.changes


def test_run_json_describes_the_run(api: MockServer, tmp_path: Path) -> None:
    write(tmp_path, "s/_data/rows.csv", "id,word\nok,fine\nbad,nope\n")
    path = write(tmp_path, "s/m.yaml", """
        model: glm-4-flash
        messages: [{role: user, content: "{{ word }}"}]
        cases: _data/rows.csv
        expect: [{contains: fine}]
        conversations:
          - name: check
          - name: broken
            cases: [{word: "[[fault:1301]]"}]
    """)
    out = tmp_path / "out"
    result = run(api, path, out, "--format", "json")
    assert result.exit_code == 3
    data = read_manifest(out)
    runs = data.pop("runs")
    for key in ("started_at", "finished_at"):
        assert data.pop(key).endswith("Z")
    assert data.pop("wall_s") > 0
    git = data.pop("git")
    assert git is None or (len(git["commit"]) == 40 and isinstance(git["dirty"], bool))
    assert data.pop("command")[0] == "glmrun"
    assert data == {
        "format": "glmrun-run/1", "glmrun_version": "0.1.0",
        "settings": {"mode": None, "concurrency": 4, "models": ["glm-4-flash"],
                     "formats": ["json"], "shard": None, "filter": None, "resume": False,
                     "last_failed": False, "repeat": None, "limit": None},
        "totals": {"runs": 3, "passed": 1, "failed": 1, "errors": 1, "not_run": 0,
                   "tokens": data["totals"]["tokens"], "cost": data["totals"]["cost"]},
        "interrupted": False, "stopped": None,
    }
    assert [r["id"] for r in runs] == ["m--broken--case1", "m--check--bad", "m--check--ok"]
    broken, bad, ok = runs
    assert ok == {
        "id": "m--check--ok", "status": "passed", "file": ok["file"], "conversation": "check",
        "case": "ok", "case_index": 0, "model": "glm-4-flash", "repeat": None,
        "tokens": ok["tokens"], "cost": ok["cost"], "latency_s": ok["latency_s"],
        "transcript": "m--check--ok.json", "failures": [], "reply_hash": ok["reply_hash"],
        "id_without_model": "m--check--ok",
    }
    assert ok["file"].endswith("s/m.yaml") and ok["tokens"] > 0 and ok["latency_s"] > 0
    t = transcripts(out)
    assert ok["tokens"] == t["m--check--ok"]["usage"]["total_tokens"]
    assert bad["status"] == "failed" and bad["failures"] == ["expected reply to contain 'fine'"]
    assert broken["status"] == "error" and broken["failures"][0].startswith("content_filter: ")
    assert data["totals"]["tokens"] == sum(r["tokens"] for r in runs)
    assert ok["cost"] == t["m--check--ok"]["cost"] is not None  # glm-4-flash has a price
    assert data["totals"]["cost"] == round(sum(r["cost"] for r in runs if r["cost"] is not None),
                                           8)


def test_runs_a_stopped_run_never_started_are_not_run(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", """
        model: m
        messages: [{role: user, content: "{{ word }}"}]
        cases: [{word: "[[fault:401]]"}, {word: b}, {word: c}]
    """)
    out = tmp_path / "out"
    assert run(api, path, out, "-j", "1").exit_code == 3
    data = read_manifest(out)
    assert [(r["id"], r["status"], r["transcript"]) for r in data["runs"]] == [
        ("s--case1", "error", "s--case1.json"), ("s--case2", "not_run", None),
        ("s--case3", "not_run", None)]
    assert data["totals"]["not_run"] == 2
    assert data["stopped"] == "身份验证失败。 (HTTP 401, code 1000)"


def test_last_failed_reruns_only_what_did_not_pass_and_keeps_the_rest(
    api: MockServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "s.yaml", """
        model: m
        messages: [{role: user, content: "{{ word }}"}]
        cases: [{word: fine}, {word: bad}, {word: "[[fault:1301]]"}]
        expect: [{contains: fine}]
    """)
    out = tmp_path / "out"
    assert run(api, path, out).exit_code == 3
    api.requests.clear()
    result = run(api, path, out, "--last-failed")
    assert result.exit_code == 3
    sent = [r.body["messages"][0]["content"] for r in api.requests if r.method == "POST"]
    assert sorted(sent) == ["[[fault:1301]]", "bad"]
    data = read_manifest(out)
    assert [(r["id"], r["status"], r.get("earlier", False)) for r in data["runs"]] == [
        ("s--case1", "passed", True), ("s--case2", "failed", False),
        ("s--case3", "error", False)]
    assert data["totals"]["runs"] == 3 and data["settings"]["last_failed"] is True

    passing = tmp_path / "passing"
    assert run(api, path, passing, "--filter", "s--case1").exit_code == 0
    nothing = run(api, path, passing, "--last-failed")
    assert nothing.exit_code == 0
    assert nothing.stdout == f"nothing to run: every run in {passing} passed\n"
    empty = run(api, path, tmp_path / "never", "--last-failed")
    assert empty.exit_code == 2 and "holds no earlier run" in empty.stderr


def test_repeat_limit_and_the_summary_files(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", """
        model: m
        messages: [{role: user, content: "{{ word }}"}]
        cases: [{word: fine}, {word: bad}]
        expect: [{contains: fine}]
    """)
    out = tmp_path / "out"
    summary, table = tmp_path / "sum" / "summary.json", tmp_path / "runs.csv"
    result = run(api, path, out, "--repeat", "2", "--limit", "3", "--summary-json", summary,
                 "--summary-csv", table)
    assert result.exit_code == 1
    assert sorted(transcripts(out)) == ["s--case1--r1", "s--case1--r2", "s--case2--r1"]
    data = json.loads(summary.read_text("utf-8"))
    assert data["format"] == "glmrun-summary/1" and data["exit_code"] == 1
    assert data["totals"] == {"runs": 3, "passed": 2, "failed": 1, "errors": 0, "not_run": 0,
                              "tokens": data["totals"]["tokens"], "cost": None}
    assert [(c["conversation"], c["runs"], c["passed"], c["failed"])
            for c in data["conversations"]] == [("s", 3, 2, 1)]
    assert [(m["model"], m["runs"], m["passed"], m["pass_rate"]) for m in data["models"]] == [
        ("m", 3, 2, 0.6667)]
    assert data["not_passed"] == [{"id": "s--case2--r1", "status": "failed",
                                   "failures": ["expected reply to contain 'fine'"]}]
    with table.open(encoding="utf-8", newline="") as f:
        lines = list(csv.DictReader(f))
    assert [(r["id"], r["status"], r["repeat"], r["case"]) for r in lines] == [
        ("s--case1--r1", "passed", "1", "case1"), ("s--case1--r2", "passed", "2", "case1"),
        ("s--case2--r1", "failed", "1", "case2")]
    assert lines[2]["failures"] == "expected reply to contain 'fine'"


def test_a_model_matrix_runs_each_model_side_by_side(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "g.yaml", """
        model: m
        messages: [{role: user, content: "{{ word }}"}]
        cases: [{word: fine}, {word: bad}]
        expect: [{contains: fine}]
    """)
    out = tmp_path / "out"
    result = run(api, path, out, "--model", "glm-4-flash", "--model", "glm-4-plus")
    assert result.exit_code == 1
    assert sorted({b["model"] for b in (r.body for r in api.requests if r.method == "POST")}) \
        == ["glm-4-flash", "glm-4-plus"]
    assert sorted(transcripts(out)) == ["g--case1@glm-4-flash", "g--case1@glm-4-plus",
                                        "g--case2@glm-4-flash", "g--case2@glm-4-plus"]
    data = read_manifest(out)
    table = matrix.render_text(data).splitlines()
    assert table[0].split() == ["model", "passed", "failed", "errors", "tokens", "cost",
                                "latency/run"]
    assert table[1].split()[:4] == ["glm-4-flash", "1/2", "(50%)", "1"]
    assert table[2].split()[:4] == ["glm-4-plus", "1/2", "(50%)", "1"]
    assert table[3] == "models agree on every run"
    assert "\n".join(table) in result.stdout
    md = (out / "matrix.md").read_text("utf-8")
    assert md.startswith("# Model matrix\n\n| Model | Passed |")
    assert "| `glm-4-flash` | 1/2 (50%) | 1 | 0 |" in md


def test_models_that_disagree_are_listed() -> None:
    def entry(key: str, model: str, status: str) -> dict[str, Any]:
        return {"id": f"{key}@{model}", "id_without_model": key, "model": model,
                "status": status, "tokens": 10, "cost": None, "latency_s": 0.5}

    plain = {"runs": [{"id": "a", "id_without_model": "a", "model": "x"},
                      {"id": "b", "id_without_model": "b", "model": "y"}]}
    assert not matrix.is_matrix(plain)  # files that name different models are no matrix
    data = {"runs": [entry("a", "x", "passed"), entry("a", "y", "failed"),
                     entry("b", "x", "passed"), entry("b", "y", "passed"),
                     entry("c", "x", "error"), entry("c", "y", "passed")]}
    assert [(d.id, dict(d.statuses)) for d in matrix.disagreements(data)] == [
        ("a", {"x": "passed", "y": "failed"}), ("c", {"x": "error", "y": "passed"})]
    assert matrix.render_text(data).splitlines()[1:] == [
        "x      2/3 (67%)  0       1       30      —     0.50s",
        "y      2/3 (67%)  1       0       30      —     0.50s",
        "models disagree on 2 runs:",
        "  a: x passed, y failed",
        "  c: x error, y passed",
    ]
    md = matrix.render_markdown(data)
    assert "## Where the models disagree (2)\n\n| Run | `x` | `y` |\n| --- | --- | --- |\n" \
           "| `a` | passed | failed |\n| `c` | error | passed |\n" in md


@pytest.mark.parametrize("name", ["run"])
def test_the_manifest_name_is_not_a_run_id(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"{name}.yaml", "model: m\nmessages: [{role: user, content: x}]\n")
    result = glmrun(path, "--mock", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "the run id 'run' is taken by the run's manifest (run.json)" in result.stderr
