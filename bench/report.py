"""Report scale: the HTML report of a 10,000-conversation run — its size, the time to build
it, and in headless Chromium the time to open it, filter, sort and open a conversation.

The run is real: glmrun against the emulator (latency 0, in its own process), one file with
10,000 cases of which every tenth fails an expectation.

    .venv/bin/python bench/report.py [--n 10000] [-j 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import GLMRUN, MODEL, emulator, glmrun_env, run_child  # noqa: E402
from fixtures.browser import chromium  # noqa: E402


def write_suite(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"  - {{n: {i}, want: {'absent' if i % 10 == 0 else 'question'}}}\n"
                   for i in range(n))
    path = folder / "scale.yaml"
    path.write_text(
        f"model: {MODEL}\n"
        "messages:\n"
        "  - {role: system, content: \"You answer in one sentence.\"}\n"
        "  - {role: user, content: \"question number {{ n }}: what is {{ n }} squared?\"}\n"
        "expect: [{contains: \"{{ want }}\"}, {max_tokens: 500}]\n"
        f"cases:\n{rows}",
        encoding="utf-8",
    )
    return path


QUERY = "() => document.querySelector('#runs').dataset.query === {!r}"


def browser_steps(page: Any, url: str) -> dict[str, float]:
    """Milliseconds for each step, each waited for until the page shows its result."""
    took: dict[str, float] = {}

    def step(name: str, *actions: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        for action in actions:
            action()
        took[name] = (time.perf_counter() - t0) * 1000

    step("open", lambda: page.goto(url), lambda: page.wait_for_selector("body[data-ready]"))
    step("search", lambda: page.fill("#q", "number 4242:"),
         lambda: page.wait_for_function(QUERY.format("number 4242:")))
    step("clear", lambda: page.fill("#q", ""), lambda: page.wait_for_function(QUERY.format("")))
    step("status", lambda: page.uncheck("#chips input[value=passed]"),
         lambda: page.wait_for_function(
             "() => document.querySelector('#count').textContent.includes(' of ')"))
    step("sort", lambda: page.click("#runs th[data-key=tokens]"))
    step("conversation", lambda: page.click("#runs tbody tr[data-id]"),
         lambda: page.wait_for_selector("#detail-view .chat"))
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("-j", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="browser rounds; the best is kept")
    ap.add_argument("--out", type=Path, help="keep the run in this folder (reused if it exists)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        out, html = args.out or tmp / "out", tmp / "report.html"
        if not out.is_dir():
            suite = write_suite(tmp / "suite", args.n)
            with emulator() as emu:
                run = run_child([GLMRUN, str(suite), "--base-url", emu.base_url, "-o", str(out),
                                 "-j", str(args.j), "--format", "json", "--no-progress", "-q"],
                                env=glmrun_env())
            if run.returncode not in (0, 1):
                sys.exit(f"glmrun exited {run.returncode}:\n{run.stderr[-2000:]}")
            print(f"run: {args.n} conversations in {run.wall_s:.1f}s")
        build = run_child([GLMRUN, "report", str(out), "-o", str(html)])
        if build.returncode != 0:
            sys.exit(build.stderr)
        size_mb = html.stat().st_size / 1e6
        print(f"glmrun report: {build.wall_s:.2f}s wall, {build.maxrss_mb:.0f} MB peak RSS, "
              f"file {size_mb:.1f} MB")
        best: dict[str, float] = {}
        with chromium() as browser:
            for _ in range(args.rounds):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                for step, took in browser_steps(page, html.as_uri()).items():
                    best[step] = min(best.get(step, took), took)
                shown = page.text_content("#count")
                page.close()
        print(f"after the status filter: {shown}")
        print(f"chromium, best of {args.rounds}: " + ", ".join(
            f"{k} {v:.0f} ms" for k, v in best.items()))
        print(f"{args.n} runs: {size_mb:.1f} MB file, built in {build.wall_s:.1f}s; opens in "
              f"{best['open'] / 1000:.2f}s, search {best['search']:.0f} ms, "
              f"open a conversation {best['conversation']:.0f} ms")


if __name__ == "__main__":
    main()
