"""Templates in conversation files: Jinja2, sandboxed (glmrun.plan.sandbox), strict about
undefined names, includes kept inside the suite folder (the conversation file's folder),
compiled templates cached (glmrun.plan.jinja).

Values are rendered as plain text (no HTML escaping). Strings without `{{`, `{%` or `{#` never
reach Jinja2, nor do templates that only print variables (`Hello {{ user }}`): those are
substituted here, as Jinja2 would print them, without importing it. Every failure is a
`RenderError` (a `TemplateError`) that says which variable, which include or which template
line, and `path`: where in the rendered value it happened.
"""

from __future__ import annotations

import functools
import keyword
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glmrun.errors import RenderError
from glmrun.plan.bounds import MAX_INT_BITS, MAX_SIZE

if TYPE_CHECKING:
    from glmrun.plan.jinja import JinjaTemplates

_MARKERS = ("{{", "{%", "{#")
# `{{ name }}`: one variable printed as it is; every other use of Jinja2's syntax goes to Jinja2
_NAME = re.compile(r"\{\{[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\}\}")
# names Jinja2 does not read as the variable: constants, operators (`{{ not }}` is a syntax
# error), its own (`self` is the template), Python's keywords; Jinja2 renders those
_NOT_NAMES = frozenset({"true", "false", "none", "and", "or", "not", "in", "is", "if", "else",
                        "self", "loop", "caller", "varargs", "kwargs", "super",
                        *keyword.kwlist, *keyword.softkwlist})
_PLAIN = (str, int, float, bool, type(None))


def has_template(text: str) -> bool:
    """True when the string holds Jinja2 syntax (else it is used as it is)."""
    return any(marker in text for marker in _MARKERS)


def substitute(text: str, variables: Mapping[str, Any]) -> str | None:
    """`text` with each `{{ name }}` replaced by the variable's value, exactly as Jinja2 in
    glmrun's sandbox prints it, when that is all its template syntax; None for anything else
    (a filter, an attribute, a tag, a comment, an undefined name, one of Jinja2's own names, a
    value that is not a plain string or number, a carriage return Jinja2 would turn into a
    newline, a `{` just before `{{`, output past the sandbox's bounds), which Jinja2 renders
    (and explains the failures of).

    Most templates are only this; they then cost no Jinja2 import, compile or render.
    tests/test_templating.py checks on generated templates and values that both agree.
    """
    parts = _NAME.split(text)
    literals = parts[0::2]
    if any("\r" in lit or has_template(lit) for lit in literals):
        return None
    if any(lit.endswith("{") for lit in literals[:-1]):  # `{{{ x }}`: Jinja2 reads `{{ {`
        return None
    out = [literals[0]]
    size = len(literals[0])
    for name, literal in zip(parts[1::2], literals[1:], strict=True):
        if name in _NOT_NAMES or name not in variables:
            return None
        value = variables[name]
        if type(value) not in _PLAIN:
            return None
        if type(value) is int and value.bit_length() > MAX_INT_BITS:
            return None
        printed = value if type(value) is str else str(value)
        size += len(printed) + len(literal)
        if size > MAX_SIZE:
            return None
        out += (printed, literal)
    return "".join(out)


class Renderer:
    """Renders templates for one suite folder (includes resolve against it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @functools.cached_property
    def _jinja(self) -> JinjaTemplates:
        from glmrun.plan.jinja import JinjaTemplates  # Jinja2 is imported only when needed

        return JinjaTemplates(self.root)

    def render_str(self, text: str, variables: Mapping[str, Any]) -> str:
        """Render one string (unchanged when it holds no Jinja2 syntax)."""
        if not has_template(text):
            return text
        return self.render_template(text, variables)

    def render_template(self, text: str, variables: Mapping[str, Any]) -> str:
        """Render one template: plain substitution when that is all it is, else Jinja2."""
        plain = substitute(text, variables)
        return plain if plain is not None else self._jinja.render(text, variables)

    def render_value(
        self, value: Any, variables: Mapping[str, Any], path: tuple[Any, ...] = ()
    ) -> Any:
        """Render every string inside lists and mappings; other values are kept as they are."""
        if isinstance(value, str):
            try:
                return self.render_str(value, variables)
            except RenderError as exc:
                raise exc.at(path) from None
        if isinstance(value, Mapping):
            out = {k: self.render_value(v, variables, (*path, k)) for k, v in value.items()}
            # unchanged values keep their object: thousands of runs then share one copy
            same = isinstance(value, dict) and all(out[k] is value[k] for k in value)
            return value if same else out
        if isinstance(value, (list, tuple)):
            items = [self.render_value(v, variables, (*path, i)) for i, v in enumerate(value)]
            same = isinstance(value, list) and all(
                a is b for a, b in zip(items, value, strict=True))
            return value if same else items
        return value


@functools.lru_cache(maxsize=256)
def renderer_for(root: Path) -> Renderer:
    """The (cached) renderer for a suite folder."""
    return Renderer(root)


def render_value(value: Any, variables: Mapping[str, Any], *, root: Path) -> Any:
    """Render `value` (see Renderer.render_value) with includes rooted at `root`."""
    return renderer_for(root).render_value(value, variables)
