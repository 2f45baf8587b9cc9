"""Make docs/report.png and docs/report-conversation.png: the report of the convos/ examples.

    python docs/screenshots.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fixtures.browser import chromium  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)  # run from a copy, so the report names its folder as a user would
        shutil.copytree(REPO / "convos", tmp / "convos")
        glmrun = [sys.executable, "-m", "glmrun"]
        subprocess.run([*glmrun, "convos/", "--mock", "-q", "--no-progress"],
                       cwd=tmp, check=False, capture_output=True)
        subprocess.run([*glmrun, "report", "glmrun-out"], cwd=tmp, check=True)
        html = tmp / "glmrun-out" / "report.html"
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
