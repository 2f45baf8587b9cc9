"""Make docs/report.png and docs/report-conversation.png: the report of the convos/ examples.

    python docs/screenshots.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fixtures.browser import chromium  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out, html = Path(tmp) / "glmrun-out", Path(tmp) / "report.html"
        glmrun = [sys.executable, "-m", "glmrun"]
        subprocess.run([*glmrun, "convos/", "--mock", "-o", str(out), "-q", "--no-progress"],
                       cwd=REPO, check=False, capture_output=True)
        subprocess.run([*glmrun, "report", str(out), "-o", str(html)], cwd=REPO, check=True)
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000},
                                    device_scale_factor=1, color_scheme="light")
            page.goto(html.as_uri())
            page.wait_for_selector("body[data-ready]")
            page.screenshot(path=str(REPO / "docs" / "report.png"))
            page.goto(html.as_uri() + "#run=tools")
            page.wait_for_selector("#detail-view .chat")
            page.screenshot(path=str(REPO / "docs" / "report-conversation.png"), full_page=True)
    print("wrote docs/report.png, docs/report-conversation.png")


if __name__ == "__main__":
    main()
