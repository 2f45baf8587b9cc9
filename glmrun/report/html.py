"""One self-contained HTML file per report: Jinja2 templates (autoescaped), the data as JSON
blocks (Jinja2's `tojson`, which escapes `<`, `>`, `&` and `'`), the stylesheet and script
inline under a Content-Security-Policy that allows exactly them (by hash) and nothing else:
no requests, no other script, images only from data: URLs.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from glmrun import __version__
from glmrun.report.data import COLUMNS, JSON_STYLE, DiffReport, Report, load_diff, load_report

_ASSETS = files("glmrun.report") / "assets"


@cache
def _environment() -> Environment:
    env = Environment(loader=PackageLoader("glmrun.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    # Compact, readable UTF-8 JSON; tojson still escapes what could end the <script> block.
    env.policies["json.dumps_kwargs"] = JSON_STYLE
    env.filters["thousands"] = lambda n: "–" if n is None else f"{n:,}"
    env.filters["ms"] = _format_ms
    env.filters["shorten"] = _shorten
    env.filters["yuan"] = _yuan
    return env


def _format_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _yuan(cost: float) -> str:
    """A cost for people: ¥0, ¥0.0042, ¥12.50."""
    if cost == 0:
        return "¥0"
    return f"¥{cost:.2f}" if cost >= 1 else f"¥{cost:.6f}".rstrip("0")


def _shorten(text: object, width: int = 22) -> str:
    s = str(text)
    return s if len(s) <= width else s[: width - 1] + "…"


@dataclass(frozen=True)
class Asset:
    """An inline stylesheet or script and its CSP source expression."""

    text: Markup
    csp: str


def _asset(name: str) -> Asset:
    text = _ASSETS.joinpath(name).read_text("utf-8")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return Asset(Markup(text), f"'sha256-{digest}'")  # our own file, verbatim: not data


def _policy(style: Asset, script: Asset | None) -> str:
    return "; ".join([
        "default-src 'none'",
        f"script-src {script.csp if script else chr(39) + 'none' + chr(39)}",
        f"style-src {style.csp}",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
    ])


def _generated() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _report_parts(report: Report) -> tuple[Any, dict[str, Any]]:
    style, script = _asset("report.css"), _asset("report.js")
    data = {"columns": list(COLUMNS), "rows": report.rows, "models": report.models}
    return _environment().get_template("report.html.j2"), dict(
        r=report, h=report.header, data=data, style=style, script=script,
        csp=_policy(style, script), version=__version__, generated=_generated(),
    )


def _diff_parts(diff: DiffReport) -> tuple[Any, dict[str, Any]]:
    style = _asset("report.css")
    return _environment().get_template("diff.html.j2"), dict(
        d=diff, style=style, csp=_policy(style, None), version=__version__,
        generated=_generated(),
    )


def _parts(folders: Sequence[Path]) -> tuple[Any, dict[str, Any]]:
    if len(folders) == 2:
        return _diff_parts(load_diff(folders[0], folders[1]))
    return _report_parts(load_report(folders[0]))


def render_report(report: Report) -> str:
    """The run's report as one HTML document."""
    template, context = _report_parts(report)
    return str(template.render(**context))


def render_diff(diff: DiffReport) -> str:
    """Two runs compared, as one HTML document with no script at all."""
    template, context = _diff_parts(diff)
    return str(template.render(**context))


def build(folders: Sequence[Path]) -> str:
    """The report of one run folder, or the diff report of two (old, new)."""
    template, context = _parts(folders)
    return str(template.render(**context))


def _chunks(pieces: Iterator[str], size: int = 1 << 20) -> Iterator[bytes]:
    """The template's output in writes of about `size` bytes (it yields many small strings)."""
    buffer: list[str] = []
    held = 0
    for piece in pieces:
        buffer.append(piece)
        held += len(piece)
        if held >= size:
            yield "".join(buffer).encode("utf-8")
            buffer, held = [], 0
    yield "".join(buffer).encode("utf-8")


def write_report(folders: Sequence[Path], out: Path) -> dict[str, Any]:
    """Write the report to `out` as the template produces it (the page is never one string in
    memory); returns what was written, for the CLI's message."""
    from glmrun.safety.atomic import write_atomically

    template, context = _parts(folders)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0

    def counted() -> Iterator[bytes]:
        nonlocal written
        for chunk in _chunks(template.generate(**context)):
            written += len(chunk)
            yield chunk

    write_atomically(out, counted(), durable=False)
    return {"path": out, "bytes": written}
