"""Jinja2 itself for conversation files: the sandboxed environment of a suite folder, includes
kept inside it, compiled templates cached, and every Jinja2 failure as a RenderError. Imported
only when a template needs Jinja2 (glmrun.plan.templating renders plain `{{ name }}` ones).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError

from glmrun.errors import OutsideSuiteError, RenderError
from glmrun.plan.sandbox import BoundedEnvironment, render_bounded
from glmrun.safety.suitefiles import inside_suite

MAX_INCLUDE_BYTES = 1024 * 1024
_CACHE_LIMIT = 4096


class _SuiteLoader(jinja2.BaseLoader):
    """Loads includes from the suite folder only: no `..`, no absolute paths, no symlink out."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        try:
            resolved = inside_suite(self.root, template, "include")
        except OutsideSuiteError:
            raise RenderError(f"include '{template}' escapes the suite folder") from None
        if not resolved.is_file():
            raise jinja2.TemplateNotFound(template)
        path = self.root / template.replace("\\", "/")
        if resolved.stat().st_size > MAX_INCLUDE_BYTES:
            raise RenderError(f"include '{template}' is larger than 1 MB")
        try:
            source = resolved.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise RenderError(f"include '{template}' is not UTF-8 text") from None
        mtime = resolved.stat().st_mtime

        def uptodate() -> bool:
            try:
                return resolved.stat().st_mtime == mtime
            except OSError:
                return False

        return source, str(path), uptodate


class JinjaTemplates:
    """Jinja2 templates of one suite folder (includes resolve against it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = BoundedEnvironment(
            loader=_SuiteLoader(root),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            cache_size=400,
        )
        self._compiled: dict[str, jinja2.Template] = {}

    def render(self, text: str, variables: Mapping[str, Any]) -> str:
        """Render one template; every failure is a RenderError that says what and where."""
        try:
            template = self._compiled.get(text)
            if template is None:
                if len(self._compiled) >= _CACHE_LIMIT:
                    self._compiled.clear()
                template = self._compiled[text] = self.env.from_string(text)
            return render_bounded(template, variables)
        except RenderError:
            raise
        except jinja2.TemplateSyntaxError as exc:
            where = f"line {exc.lineno}" + (f" of '{exc.name}'" if exc.name else "")
            raise RenderError(f"template syntax error ({where}): {exc.message}") from None
        except jinja2.TemplatesNotFound as exc:
            names = ", ".join(f"'{n}'" for n in exc.templates)
            raise RenderError(f"include {names} not found in the suite folder") from None
        except jinja2.TemplateNotFound as exc:
            raise RenderError(f"include '{exc.name}' not found in the suite folder") from None
        except jinja2.UndefinedError as exc:
            raise RenderError(_undefined(exc) + self._line(exc, text)) from None
        except SecurityError as exc:
            raise RenderError(f"unsafe template: {exc}" + self._line(exc, text)) from None
        except Exception as exc:  # a filter or an operation failed inside the template
            reason = f"template error: {type(exc).__name__}: {exc}"
            raise RenderError(reason + self._line(exc, text)) from None

    def _line(self, exc: BaseException, text: str) -> str:
        """' (line N)' or " (line N of 'x.md')" from Jinja2's rewritten traceback, if useful."""
        tb: TracebackType | None = exc.__traceback__
        found: tuple[str, int] | None = None
        while tb is not None:
            if "__jinja_exception__" in tb.tb_frame.f_globals:  # a frame Jinja2 made for us
                found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
            tb = tb.tb_next
        if found is None:
            return ""
        filename, line = found
        if filename == "<template>":
            return f" (line {line})" if "\n" in text.rstrip("\n") else ""
        try:
            name = Path(filename).relative_to(self.root).as_posix()
        except ValueError:
            name = Path(filename).name
        return f" (line {line} of '{name}')"


def _undefined(exc: jinja2.UndefinedError) -> str:
    match = re.fullmatch(r"'([^']+)' is undefined", exc.message or "")
    if match:
        return f"undefined variable '{match.group(1)}'"
    return f"undefined: {exc.message}"


