"""The report in a real browser: headless Chromium (the system's, via Playwright).

One browser for the module; each test opens the report file in a fresh page that records
every request it makes and every console error (a CSP violation is one).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fixtures.browser import chromium
from fixtures.report_runs import HOSTILE, OTHER_MODEL_REPLY

from glmrun.report.html import build

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]  # one Chromium for the module


@dataclass
class Page:
    page: Any
    url: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def rows(self) -> dict[str, str]:
        return dict(self.page.eval_on_selector_all(
            "#runs tbody tr[data-id]",
            "trs => trs.map(tr => [tr.dataset.id, tr.dataset.status])"))

    def visible_ids(self) -> list[str]:
        return [i for i in self.rows()]

    def search(self, text: str) -> None:
        self.page.fill("#q", text)
        self.page.wait_for_function(
            "q => document.querySelector('#runs').getAttribute('data-query') === q", arg=text)

    def others(self) -> list[str]:
        """Requests besides the report itself."""
        return [u for u in self.requests if u != self.url]


@pytest.fixture(scope="module")
def run_dir(report_run: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, dict[str, Any]]:
    """The report file of the shared run, and the run's transcripts."""
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(build([report_run[0]]), "utf-8")
    return path, report_run[1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def open_page(browser: Any, path: Path, fragment: str = "") -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    p = Page(page, path.as_uri())
    page.on("request", lambda r: p.requests.append(r.url))
    page.on("console", lambda m: p.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: p.errors.append(str(e)))
    context.route(re.compile(r"^(https?|wss?|ftp):"), lambda route: route.abort())
    page.goto(p.url + fragment)
    page.wait_for_selector("body[data-ready]", timeout=10_000)
    try:
        yield p
    finally:
        context.close()


@pytest.fixture
def report(browser: Any, run_dir: tuple[Path, dict[str, Any]]) -> Iterator[Page]:
    yield from open_page(browser, run_dir[0])


def test_the_table_lists_every_run_with_its_status_and_fetches_nothing(
    report: Page, run_dir: tuple[Path, dict[str, Any]],
) -> None:
    found = run_dir[1]
    assert report.rows() == {i: t["status"] for i, t in found.items()}
    assert report.page.text_content("#count") == f"{len(found)} runs"
    first = report.visible_ids()[:3]  # problems first: the error, then the failures
    assert [found[i]["status"] for i in first] == ["error", "failed", "failed"]
    assert report.others() == [] and report.errors == []


def test_search_status_chips_and_sorting_narrow_and_order_the_table(
    report: Page, run_dir: tuple[Path, dict[str, Any]],
) -> None:
    found = run_dir[1]
    report.search("14:30")  # in the tools conversation's replies only
    assert report.rows() == {"tools": "passed"}
    report.search("GLM-4V")  # the model column, case-insensitive
    assert set(report.rows()) == {i for i, t in found.items() if t["model"] == "glm-4v-plus"}
    report.search("")
    report.page.uncheck("#chips input[value=passed]")
    assert set(report.rows()) == {i for i, t in found.items() if t["status"] != "passed"}
    report.page.check("#chips input[value=passed]")
    report.page.click("#runs th[data-key=tokens]")  # most tokens first
    tokens = [found[i]["usage"]["total_tokens"] for i in report.visible_ids()]
    assert tokens == sorted(tokens, reverse=True) and len(tokens) == len(found)
    assert report.errors == []


def test_opening_a_conversation_shows_the_chat_tools_checks_and_metrics(
    report: Page, run_dir: tuple[Path, dict[str, Any]],
) -> None:
    page = report.page
    page.click("#runs tr[data-id=tools]")
    page.wait_for_selector("#detail-view .chat")
    assert page.is_hidden("#list-view")
    roles = page.eval_on_selector_all("#detail-view .msg", "ms => ms.map(m => m.className)")
    tools = run_dir[1]["tools"]
    assert roles == ["msg " + m["role"] for m in tools["messages"]]
    calls = page.eval_on_selector_all("#detail-view .toolcall",
                                      "els => els.map(e => e.querySelector('.fn').textContent)")
    assert calls == ["get_weather", "get_time"]
    assert '"city": "北京"' in page.text_content("#detail-view .toolcall pre")
    result = tools["tool_results"][0]
    assert page.text_content("#detail-view .msg.tool .text") == result["result"]
    assert len(page.query_selector_all("#detail-view .calls tbody tr")) == len(tools["calls"])

    page.go_back()  # back to the table, then a failed conversation's checklist
    page.wait_for_selector("#list-view:not([hidden])")
    page.click("#runs tr[data-id='mixed--wrong']")
    wrong = run_dir[1]["mixed--wrong"]["expectations"][0]
    assert page.text_content("#detail-view .checks li.ko .reason") == wrong["reason"]
    assert page.text_content("#detail-view .checks li.ko code") == "polite"

    page.evaluate("location.hash = 'run=thinking'")  # reasoning is folded
    page.wait_for_selector("#detail-view details.reasoning")
    assert page.eval_on_selector("#detail-view details.reasoning", "d => d.open") is False
    usage = run_dir[1]["thinking"]["usage"]
    assert page.text_content("#detail-view .facts div:has(dt:text-is('Tokens')) dd") == (
        f"{usage['total_tokens']} ({usage['prompt_tokens']} in + {usage['completion_tokens']} "
        f"out) · reasoning {usage['reasoning_tokens']}")

    page.evaluate("location.hash = 'run=vision'")  # the image, sent as bare base64, is shown
    img = page.wait_for_selector("#detail-view .msg.user img")
    (sent,) = [p["image_url"]["url"] for m in run_dir[1]["vision"]["messages"]
               if isinstance(m["content"], list) for p in m["content"] if "image_url" in p]
    assert img.get_attribute("src") == (sent if sent.startswith("data:")
                                        else "data:image/png;base64," + sent)
    page.wait_for_function("() => document.querySelector('#detail-view img').naturalWidth > 0")
    assert report.others() == [] and report.errors == []


def test_html_and_script_in_replies_are_shown_as_text_and_never_run(
    browser: Any, run_dir: tuple[Path, dict[str, Any]], tmp_path: Path,
) -> None:
    for p in open_page(browser, run_dir[0], "#run=hostile"):
        page = p.page
        page.wait_for_selector("#detail-view .chat")
        assert page.evaluate("window.__xss") is None
        texts = page.eval_on_selector_all("#detail-view .msg .text",
                                          "els => els.map(e => e.textContent)")
        assert texts.count(HOSTILE) == 2  # the tool's result and the reply, verbatim
        assert page.text_content("#detail-view h2") == "failed" + f"evil {HOSTILE}"
        assert page.text_content("#detail-view .checks .reason") == HOSTILE
        # Images only from data: URLs; other URLs are text or a plain link, never loaded.
        assert page.query_selector_all("#detail-view img") == []
        assert page.eval_on_selector_all("#detail-view a[href]", "as => as.map(a => a.href)") \
            == [p.url + "#", "https://evil.example/x.png"]  # the way back, the image's link
        page.evaluate("location.hash = ''")
        p.search("window.__xss")
        assert p.rows() == {"hostile": "failed"}
        assert page.evaluate("window.__xss") is None
        assert p.others() == [] and p.errors == []

    # The policy itself: a script added to the page without its hash does not run.
    text = run_dir[0].read_text("utf-8").replace(
        "</body>", "<script>window.__xss = 'inline'</script></body>")
    (tmp_path / "tampered.html").write_text(text, "utf-8")
    for p in open_page(browser, tmp_path / "tampered.html"):
        assert p.page.evaluate("window.__xss") is None
        assert any("Content Security Policy" in e for e in p.errors)


def test_a_case_run_on_two_models_is_shown_side_by_side(
    report: Page, run_dir: tuple[Path, dict[str, Any]],
) -> None:
    page = report.page
    page.click("#tabs a[data-view=matrix]")
    page.wait_for_selector("#matrix-view .group")
    groups = page.eval_on_selector_all("#matrix-view .group", """gs => gs.map(g => [
        g.querySelector('h4').textContent,
        Array.from(g.querySelectorAll('.side > div')).map(d => [
            d.querySelector('.hd .mono').textContent,
            d.querySelector(':scope > .text').textContent])])""")
    reply = run_dir[1]["greeting"]["messages"][-1]["content"]
    assert groups == [["greeting", [["glm-4-flash", reply], ["glm-4-plus", OTHER_MODEL_REPLY]]]]
    page.evaluate("location.hash = 'run=greeting'")  # and from the conversation itself
    page.wait_for_selector("#detail-view .side")
    assert page.eval_on_selector_all("#detail-view .side .hd .mono",
                                     "els => els.map(e => e.textContent)") == [
        "glm-4-flash", "glm-4-plus"]
    assert report.errors == []


def test_the_diff_report_renders_under_its_policy_and_fetches_nothing(
    browser: Any, report_run: tuple[Path, dict[str, Any]], tmp_path: Path,
) -> None:
    old, new = report_run[0], tmp_path / "new"
    shutil.copytree(old, new)
    t = json.loads((new / "greeting.json").read_text("utf-8"))
    t.update(status="failed")
    t["messages"][-1]["content"] = HOSTILE
    (new / "greeting.json").write_text(json.dumps(t, ensure_ascii=False), "utf-8")
    (tmp_path / "diff.html").write_text(build([old, new]), "utf-8")
    context = browser.new_context()
    try:
        page = context.new_page()
        requests: list[str] = []
        errors: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((tmp_path / "diff.html").as_uri())
        assert page.text_content("#changes tbody tr[data-label=REGRESSION] td.id") == "greeting"
        assert page.text_content(".sbs td.add") == HOSTILE  # shown as text
        assert page.evaluate("window.__xss") is None
        # the stylesheet applied (its hash matched): regressions are drawn in the fail colour
        assert page.eval_on_selector(".label.REGRESSION", "e => getComputedStyle(e).color") \
            != page.eval_on_selector("body", "e => getComputedStyle(e).color")
        assert requests == [(tmp_path / "diff.html").as_uri()] and errors == []
    finally:
        context.close()


@pytest.mark.parametrize("system", ["light", "dark"])
def test_the_theme_follows_the_system_and_the_toggle_flips_it(
        browser: Any, run_dir: tuple[Path, dict[str, Any]], system: str) -> None:
    context = browser.new_context(color_scheme=system)
    page = context.new_page()
    try:
        page.goto(run_dir[0].as_uri())
        page.wait_for_selector("body[data-ready]", timeout=10_000)

        def background() -> str:
            return str(page.evaluate("getComputedStyle(document.documentElement).backgroundColor"))

        light, dark = "rgb(246, 247, 249)", "rgb(15, 18, 23)"  # --bg's two values
        assert background() == (dark if system == "dark" else light)
        page.click("#theme")
        assert background() == (light if system == "dark" else dark)
        page.click("#theme")
        assert background() == (dark if system == "dark" else light)
    finally:
        context.close()
