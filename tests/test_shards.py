"""--shard K/N splits a suite deterministically; `glmrun merge` joins the shards into one run
that equals the unsharded run apart from timings."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fixtures.e2e.harness import REPO, write
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from glmrun.cli.main import main
from glmrun.plan.shards import Shard, parse_shard

# Fields that differ between two runs of the same suite: times, the emulator's port and ids.
VOLATILE = {"started_at", "finished_at", "duration_ms", "latency_ms", "ttft_ms", "queue_ms",
            "base_url", "request_id", "task_id", "latency_s", "wall_s", "time"}
REPEATS = """\
model: glm-4-flash
repeat: 3
pass_rate: 0.6
cases: [{id: a, q: 一}, {id: b, q: 二}, {id: c, q: 三}]
messages: [{role: user, content: "{{ q }}"}]
expect: [{contains: "{{ q }}"}]
"""


def glmrun(*args: str | Path) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def suite(root: Path) -> Path:
    """The repository's examples plus a file of repeat groups: 17 + 9 runs."""
    shutil.copytree(REPO / "convos", root / "convos")
    write(root, "convos/repeats.yaml", REPEATS)
    return root / "convos"


def run(convos: Path, out: Path, *args: str) -> Any:
    return glmrun(convos, "--mock", "-o", out, "--no-progress", "--batch-poll", "0.01", *args)


def ids(out: Path) -> set[str]:
    return {p.stem for p in out.glob("*.json") if p.name != "run.json"}


def steady(value: Any) -> Any:
    """value without what changes from run to run."""
    if isinstance(value, dict):
        return {k: steady(v) for k, v in value.items() if k not in VOLATILE
                and not (k == "id" and str(v).startswith(("chatcmpl", "batch", "task", "req")))}
    if isinstance(value, list):
        return [steady(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"\d+(\.\d+)? ms\b", "<t> ms", value)
    return value


def test_parse_shard() -> None:
    assert parse_shard("2/4") == Shard(2, 4)
    assert str(parse_shard(" 1 / 1 ")) == "1/1"
    for bad in ("0/3", "4/3", "x", "1/0", "1-2"):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize("bad", ["0/2", "3/2", "half"])
def test_a_bad_shard_is_a_usage_error(bad: str, tmp_path: Path) -> None:
    result = glmrun(REPO / "convos/greeting.yaml", "--mock", "-o", tmp_path, "--shard", bad)
    assert result.exit_code == 2
    assert "Invalid value for --shard" in result.stderr


NAMES = st.text(alphabet="abc-_@0123456789你好", min_size=1, max_size=20)


@settings(max_examples=15, deadline=2000)
@given(keys=st.sets(NAMES, max_size=30), more=st.sets(NAMES, max_size=10),
       count=st.integers(1, 6))
def test_every_run_is_in_exactly_one_shard_and_stays_there(
        keys: set[str], more: set[str], count: int) -> None:
    shards = [Shard(k, count) for k in range(1, count + 1)]
    where = {key: [s for s in shards if s.holds(key)] for key in keys}
    assert all(len(found) == 1 for found in where.values())
    grown = keys | more  # adding runs to the suite moves no existing run to another shard
    assert all([s for s in shards if s.holds(key)] == where[key] for key in keys & grown)


@pytest.mark.slow
def test_shards_split_the_suite_without_overlap_and_keep_repeat_groups_whole(
        tmp_path: Path) -> None:
    convos = tmp_path / "convos"
    shutil.copytree(REPO / "convos", convos, ignore=lambda d, names: [
        n for n in names if n.endswith(".yaml") and n not in ("greeting.yaml", "cases_csv.yaml",
                                                              "include.yaml")])
    write(tmp_path, "convos/repeats.yaml", REPEATS)
    assert run(convos, tmp_path / "whole").exit_code == 0
    parts = []
    for k in (1, 2, 3):
        result = run(convos, tmp_path / f"s{k}", "--shard", f"{k}/3")
        assert result.exit_code == 0, result.output
        parts.append(ids(tmp_path / f"s{k}"))
    assert all(parts) and sum(map(len, parts)) == len(ids(tmp_path / "whole")) == 15
    assert set().union(*parts) == ids(tmp_path / "whole")
    for part in parts:  # a repeat group (one case's three repeats) is never split
        groups = {i.rsplit("--r", 1)[0] for i in part if i.startswith("repeats--")}
        assert all({f"{g}--r{n}" for n in (1, 2, 3)} <= part for g in groups)
    again = run(convos, tmp_path / "again", "--shard", "2/3")  # the same split every time
    assert ids(tmp_path / "again") == parts[1] and again.exit_code == 0


def test_an_empty_shard_passes_and_says_so(tmp_path: Path) -> None:
    shard = next(f"{k}/2" for k in (1, 2) if not Shard(k, 2).holds("greeting"))
    result = glmrun(REPO / "convos/greeting.yaml", "--mock", "-o", tmp_path / "o",
                    "--shard", shard)
    assert result.exit_code == 0, result.output
    assert f"shard {shard}: no conversation falls in this shard\n" in result.stderr
    assert ids(tmp_path / "o") == set()


@pytest.mark.timeout(90)
@pytest.mark.slow
def test_two_shards_merged_equal_the_unsharded_run(tmp_path: Path) -> None:
    convos = suite(tmp_path)
    write(tmp_path, "convos/failing.yaml", """\
        model: glm-4-flash
        messages: [{role: user, content: 你好}]
        expect: [{contains: 再见}]
        """)
    write(tmp_path, "convos/broken.yaml", """\
        model: glm-4-flash
        messages: [{role: user, content: "[[fault:1301]] hi"}]
        """)
    whole = run(convos, tmp_path / "whole", "--junit", tmp_path / "whole.xml")
    assert whole.exit_code == 3  # an error (1301) and a failure: errors win
    shards = [run(convos, tmp_path / f"s{k}", "--shard", f"{k}/2") for k in (1, 2)]
    assert {r.exit_code for r in shards} <= {0, 1, 3}
    merged = glmrun("merge", tmp_path / "s1", tmp_path / "s2", "-o", tmp_path / "merged",
                    "--junit", tmp_path / "merged.xml")
    assert merged.exit_code == whole.exit_code, merged.output
    # the whole run's closing summary, line by line (times aside)
    def table(text: str) -> list[str]:
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("conversation "))
        return [re.sub(r"\d+\.\d+s\b", "<t>", line) for line in lines[start:-1]]
    assert table(merged.stdout) == table(whole.stdout)
    assert merged.stdout.splitlines()[-1].startswith("tokens: ")
    assert merged.stdout.splitlines()[-1].split()[1] == whole.stdout.splitlines()[-1].split()[1]
    # every transcript, with the same content
    out, merged_out = tmp_path / "whole", tmp_path / "merged"
    assert ids(merged_out) == ids(out)
    for run_id in ids(out):
        a = json.loads((out / f"{run_id}.json").read_text("utf-8"))
        b = json.loads((merged_out / f"{run_id}.json").read_text("utf-8"))
        assert steady(a) == steady(b), run_id
        assert (merged_out / f"{run_id}.md").is_file()
    # the manifest: the same runs with the same statuses and tokens
    manifest = json.loads((merged_out / "run.json").read_text("utf-8"))
    statuses = {i: json.loads((out / f"{i}.json").read_text("utf-8"))["status"] for i in ids(out)}
    assert {r["id"]: r["status"] for r in manifest["runs"]} == statuses
    assert [r["id"] for r in manifest["runs"]] == sorted(statuses)
    assert manifest["totals"]["runs"] == 28 and manifest["settings"]["shard"] is None
    assert manifest["merged_from"] == [str(tmp_path / "s1"), str(tmp_path / "s2")]
    # the JUnit report
    def cases(path: Path) -> dict[str, str]:
        tree = etree.parse(str(path))
        return {c.get("name"): "".join(c.xpath("*/@type")) for c in tree.iter("testcase")}
    assert cases(tmp_path / "merged.xml") == cases(tmp_path / "whole.xml")
    assert len(cases(tmp_path / "merged.xml")) == 28


def test_merge_refuses_overlapping_folders_and_writing_into_a_source(tmp_path: Path) -> None:
    assert run(REPO / "convos/greeting.yaml", tmp_path / "a").exit_code == 0
    result = glmrun("merge", tmp_path / "a", tmp_path / "a", "-o", tmp_path / "m")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: run greeting is in both {tmp_path / 'a'} and ")
    result = glmrun("merge", tmp_path / "a", "-o", tmp_path / "a")
    assert result.exit_code == 2
    assert "is one of the folders merged" in result.stderr
    (tmp_path / "empty").mkdir()
    result = glmrun("merge", tmp_path / "empty", "-o", tmp_path / "m")
    assert result.exit_code == 2
    assert "has neither run.json nor transcripts" in result.stderr


def test_a_missing_shard_makes_the_merged_run_incomplete(tmp_path: Path) -> None:
    """Folders whose run.json (the manifest contract) names their shard: 2/3 is absent."""
    greeting = REPO / "convos/greeting.yaml"
    for k in (1, 3):
        assert run(greeting, tmp_path / f"s{k}").exit_code == 0
        data = json.loads((tmp_path / f"s{k}" / "greeting.json").read_text("utf-8"))
        (tmp_path / f"s{k}" / "greeting.json").rename(tmp_path / f"s{k}" / f"g{k}.json")
        data["id"] = f"g{k}"
        (tmp_path / f"s{k}" / f"g{k}.json").write_text(json.dumps(data), "utf-8")
        (tmp_path / f"s{k}" / "run.json").write_text(json.dumps({
            "format": "glmrun-run/1", "settings": {"shard": f"{k}/3"},
            "runs": [{"id": f"g{k}", "status": "passed", "transcript": f"g{k}.json",
                      "tokens": 52, "failures": []}]}), "utf-8")
    result = glmrun("merge", tmp_path / "s1", tmp_path / "s3", "-o", tmp_path / "m")
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == (
        "incomplete: no folder of shard 2/3: its runs are not in this run (exit 3)")
    manifest = json.loads((tmp_path / "m" / "run.json").read_text("utf-8"))
    assert [r["id"] for r in manifest["runs"]] == ["g1", "g3"]
    assert manifest["totals"]["passed"] == 2 and manifest["settings"]["shard"] is None


@pytest.mark.timeout(90)
@pytest.mark.slow
def test_real_shards_record_their_shard_and_merge_into_the_unsharded_manifest(
        tmp_path: Path) -> None:
    """Each `--shard K/N` job's run.json says K/N; merged, they are the whole run's run.json
    (times, git and the command aside); one of the two alone is incomplete, naming the other."""
    convos = suite(tmp_path)
    whole = run(convos, tmp_path / "whole")
    for k in (1, 2):
        assert run(convos, tmp_path / f"s{k}", "--shard", f"{k}/2").exit_code == whole.exit_code
        shard = json.loads((tmp_path / f"s{k}" / "run.json").read_text("utf-8"))
        assert shard["settings"]["shard"] == f"{k}/2"
        assert 0 < shard["totals"]["runs"] < 26
    assert json.loads((tmp_path / "whole" / "run.json").read_text("utf-8"))[
        "settings"]["shard"] is None

    def comparable(folder: Path) -> dict[str, Any]:
        data = json.loads((folder / "run.json").read_text("utf-8"))
        for key in ("started_at", "finished_at", "wall_s", "git", "command", "merged_from"):
            data.pop(key, None)
        data["settings"].pop("shard")
        data["runs"] = [{k: v for k, v in r.items() if k != "latency_s"} for r in data["runs"]]
        return data

    merged = glmrun("merge", tmp_path / "s1", tmp_path / "s2", "-o", tmp_path / "merged")
    assert merged.exit_code == whole.exit_code, merged.output
    assert comparable(tmp_path / "merged") == comparable(tmp_path / "whole")
    assert comparable(tmp_path / "merged")["totals"]["runs"] == 26
    for k, other in ((1, 2), (2, 1)):
        alone = glmrun("merge", tmp_path / f"s{k}", "-o", tmp_path / f"only{k}")
        assert alone.exit_code == 3, alone.output
        assert (f"incomplete: no folder of shard {other}/2: its runs are not in this run "
                "(exit 3)") in alone.stderr.splitlines()
