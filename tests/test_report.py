"""The HTML report without a browser: what goes into the page, the manifest or transcripts it
is read from, the diff report, `glmrun run --html`, and `glmrun view`'s server."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fixtures.e2e.harness import REPO, glmrun
from fixtures.report_runs import HOSTILE
from lxml import html as lxml_html

from glmrun.cli.main import main
from glmrun.report.data import COLUMNS, load_report
from glmrun.report.html import build
from glmrun.report.serve import ReportServer


@pytest.fixture
def run_dir(report_run: tuple[Path, dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    return report_run


def page_data(text: str) -> tuple[Any, dict[str, Any]]:
    """The page's table data and its transcripts, read back from the JSON blocks."""
    doc = lxml_html.fromstring(text)
    blocks = {s.get("id"): json.loads(s.text) for s in
              doc.xpath('//script[@type="application/json"]')}
    return doc, blocks


def rows_of(blocks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    data = blocks["glmrun-data"]
    assert data["columns"] == list(COLUMNS)
    return {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in data["rows"]}


def test_report_embeds_every_transcript_as_data_that_round_trips(
    run_dir: tuple[Path, dict[str, Any]],
) -> None:
    out, found = run_dir
    text = build([out])
    doc, blocks = page_data(text)
    rows = rows_of(blocks)
    assert {i: r["status"] for i, r in rows.items()} == {i: t["status"] for i, t in found.items()}
    assert rows["mixed--wrong"]["status"] == "failed" and rows["mixed--broken"]["status"] == "error"
    wrong = found["mixed--wrong"]["expectations"][0]
    assert rows["mixed--wrong"]["failures"] == [f"contains: {wrong['reason']}"]
    assert rows["mixed--broken"]["failures"] == [
        f"server: {found['mixed--broken']['error']['message']}"]
    for run_id, row in rows.items():  # each transcript block is the transcript, byte for byte
        assert blocks[f"t{row['transcript']}"] == found[run_id]
    # The hostile text never appears raw: `<` inside the data is \u003c, so no block ends early.
    assert HOSTILE not in text and "<!--" not in text
    assert text.count("</script>") == len(doc.xpath("//script"))


def test_report_is_self_contained_under_a_policy_that_allows_only_its_own_code(
    run_dir: tuple[Path, dict[str, Any]],
) -> None:
    doc, _ = page_data(build([run_dir[0]]))
    policy = doc.xpath('//meta[@http-equiv="Content-Security-Policy"]/@content')[0]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    (script,) = doc.xpath("//script[not(@type)]")
    (style,) = doc.xpath("//style")

    def sha(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert directives == {"default-src": "'none'", "script-src": sha(script.text),
                          "style-src": sha(style.text), "img-src": "data:",
                          "base-uri": "'none'", "form-action": "'none'"}
    assert not doc.xpath("//*[@src] | //link | //iframe | //object | //*[@style]")


def test_rows_come_from_the_manifest_when_there_is_one(
    run_dir: tuple[Path, dict[str, Any]], tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    shutil.copytree(run_dir[0], out)
    manifest = {
        "format": "glmrun-run/1", "glmrun_version": "0.1.0",
        "started_at": "2026-12-01T07:00:00Z", "finished_at": "2026-12-01T07:00:03Z",
        "wall_s": 3.2, "git": {"commit": "0123456789abcdef0123456789abcdef01234567",
                               "dirty": True},
        "command": ["glmrun", "convos", "--mock"],
        "settings": {"models": ["glm-4-flash"]},
        "totals": {"runs": 3, "passed": 1, "failed": 1, "errors": 0, "not_run": 1,
                   "tokens": 60, "cost": None},
        "interrupted": False, "stopped": "auth: 401 invalid key <b>",
        "runs": [
            {"id": "greeting", "status": "passed", "file": "convos/greeting.yaml",
             "conversation": "greeting", "case": None, "model": "glm-4-flash", "repeat": None,
             "tokens": 52, "cost": None, "latency_s": 0.84, "transcript": "greeting.json",
             "failures": []},
            {"id": "later", "status": "not_run", "file": "convos/x.yaml", "conversation": "x",
             "case": "c1", "model": "glm-4-plus", "tokens": None, "latency_s": None,
             "transcript": None, "failures": []},
            {"id": "wrong", "status": "failed", "conversation": "wrong", "model": "glm-4-flash",
             "tokens": 8, "latency_s": 0.1, "transcript": "mixed--wrong.json",
             "failures": ["polite: no goodbye"]},
        ],
    }
    (out / "run.json").write_text(json.dumps(manifest), "utf-8")
    report = load_report(out)
    rows = {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in report.rows}
    assert list(rows) == ["greeting", "later", "wrong"]  # the manifest's runs, not the folder's
    assert rows["later"] == {**rows["later"], "status": "not_run", "transcript": None,
                             "case": "c1", "model": "glm-4-plus", "reply": ""}
    assert rows["greeting"]["latency_ms"] == 840.0 and rows["greeting"]["transcript"] == 0
    assert rows["wrong"]["failures"] == ["polite: no goodbye"]
    h = report.header
    assert (h["commit"], h["dirty"], h["wall_s"], h["started_at"]) == (
        manifest["git"]["commit"], True, 3.2, "2026-12-01T07:00:00Z")
    assert h["counts"] == {"passed": 1, "failed": 1, "error": 0, "not_run": 1}
    doc, _ = page_data(build([out]))
    assert doc.xpath('string(//dl[@class="meta"]//code)') == "0123456789ab"
    assert "glmrun convos --mock" in doc.text_content()
    assert doc.xpath('string(//*[@id="ended"])') == (
        "The run stopped: auth: 401 invalid key <b> — runs not started are listed as not run.")


def test_the_header_sums_cost_and_token_details_of_the_transcripts(
    run_dir: tuple[Path, dict[str, Any]], tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name, cost, cached in (("greeting", 0.0012, 7), ("tools", 0.003, 0), ("stream", None, 0)):
        t = dict(run_dir[1][name], cost=cost)
        t["usage"] = {**t["usage"], "cached_tokens": cached, "reasoning_tokens": 5}
        (out / f"{name}.json").write_text(json.dumps(t, ensure_ascii=False), "utf-8")
    doc, blocks = page_data(build([out]))
    assert {i: r["cost"] for i, r in rows_of(blocks).items()} == {
        "greeting": 0.0012, "tools": 0.003, "stream": None}
    card = doc.xpath('//div[@id="cost"]')[0]
    assert [" ".join(e.text_content().split()) for e in card] == [
        "Cost", "¥0.0042", "1 run without a price"]
    tokens = doc.xpath('//div[@class="card"][span[@class="k"]="Tokens"]/span[@class="sub"]')[0]
    assert tokens.text_content().endswith(" out · 7 cached · 15 reasoning")


def test_diff_report_lists_status_changes_first_and_replies_side_by_side(
    run_dir: tuple[Path, dict[str, Any]], tmp_path: Path,
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(run_dir[0], old)
    shutil.copytree(run_dir[0], new)
    for name, change in (("greeting", {"status": "failed"}), ("mixed--fine", {})):
        t = json.loads((new / f"{name}.json").read_text("utf-8"))
        t.update(change)
        t["messages"][-1]["content"] = "first line\n<b>new</b> second line"
        (new / f"{name}.json").write_text(json.dumps(t, ensure_ascii=False), "utf-8")
    result = CliRunner().invoke(main, ["report", str(old), str(new)])
    assert result.exit_code == 0, result.output
    doc = lxml_html.fromstring((new / "diff.html").read_text("utf-8"))
    assert not doc.xpath("//script")  # the diff report has no script at all
    changes = [(tr.get("data-label"), tr.get("data-id"))
               for tr in doc.xpath('//table[@id="changes"]/tbody/tr')]
    assert changes == [("REGRESSION", "greeting"), ("changed", "mixed--fine")]
    assert doc.xpath('string(//*[@id="regressions"])') == "1"
    (first, second) = doc.xpath('//section[@class="change"]')
    assert "greeting" in first.text_content() and "fine" in second.text_content()
    pairs = [[td.text_content() for td in tr.xpath("td")] for tr in second.xpath(".//tbody/tr")]
    old_reply = run_dir[1]["mixed--fine"]["messages"][-1]["content"]
    assert pairs == [[old_reply, "first line"], ["", "<b>new</b> second line"]]


def test_run_with_html_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = glmrun(REPO / "convos/greeting.yaml", "--mock", "-o", out, "--html",
                    tmp_path / "r" / "report.html", "--no-progress")
    assert result.exit_code == 0, result.output
    _, blocks = page_data((tmp_path / "r" / "report.html").read_text("utf-8"))
    assert {i: r["status"] for i, r in rows_of(blocks).items()} == {"greeting": "passed"}
    assert "report: " in result.stderr


def test_report_refuses_three_folders(run_dir: tuple[Path, dict[str, Any]]) -> None:
    out = str(run_dir[0])
    result = CliRunner().invoke(main, ["report", out, out, out])
    assert result.exit_code == 2 and "one run folder" in result.stderr


@pytest.mark.timeout(20)
def test_view_serves_the_report_on_loopback_and_opens_it(
    run_dir: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    def fake_open(url: str) -> bool:  # the browser: load the page, then the user presses Ctrl-C
        seen["url"] = url
        seen["page"] = httpx.get(url, timeout=10)
        seen["other"] = httpx.get(url + "etc/passwd", timeout=10)
        raise KeyboardInterrupt

    monkeypatch.setattr("webbrowser.open", fake_open)
    result = CliRunner().invoke(main, ["view", str(run_dir[0])])
    assert result.exit_code == 0, result.output
    assert seen["url"].startswith("http://127.0.0.1:") and seen["url"] in result.stderr
    page = seen["page"]
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    _, blocks = page_data(page.text)
    assert set(rows_of(blocks)) == set(run_dir[1])
    assert seen["other"].status_code == 404


@pytest.mark.timeout(20)
def test_view_rebuilds_the_page_on_every_request(tmp_path: Path,
                                                 run_dir: tuple[Path, dict[str, Any]]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(run_dir[0] / "greeting.json", out)
    with ReportServer([out]) as server:
        first = rows_of(page_data(httpx.get(server.url, timeout=10).text)[1])
        shutil.copy(run_dir[0] / "tools.json", out)
        second = rows_of(page_data(httpx.get(server.url, timeout=10).text)[1])
    assert (set(first), set(second)) == ({"greeting"}, {"greeting", "tools"})
