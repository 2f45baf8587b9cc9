"""Warnings, never errors, about what a file asks for: a model name glmrun's table does not
know but one of its models is close to ("did you mean glm-4.7?"). New models must pass
through, so the name is sent as written; the hint only catches typos before they cost a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from glmrun import models
from glmrun.load.spec import SuiteSpec, source_path


def model_hint(name: str) -> str | None:
    """The hint for one model name, or None when the table knows it or nothing is close."""
    if "{" in name or models.find(name) is not None:  # a template: rendered per case
        return None
    close = models.did_you_mean(name)
    if close is None:
        return None
    return (f"model '{name}' is not in glmrun's model table — did you mean '{close}'? "
            "(it is sent as written)")


def model_hints(suites: Sequence[SuiteSpec], overrides: Iterable[str] = ()) -> list[str]:
    """Every hint of the files' models (as `FILE:LINE:COL: hint`) and of --model's, once each."""
    out: list[str] = []
    for name in dict.fromkeys(overrides):
        hint = model_hint(name)
        if hint is not None:
            out.append(f"--model: {hint}")
    seen: set[tuple[str, int | None, str]] = set()
    found: list[tuple[str, int, int, str]] = []
    for suite in suites:
        for conv in suite.conversations:
            named: list[tuple[tuple[Any, ...], str]] = [
                (("models", i), m) for i, m in enumerate(conv.models)] or [
                (("model",), conv.model)]
            for path, name in named:
                hint = model_hint(name)
                if hint is None:
                    continue
                where = source_path(conv, path)
                pos = suite.positions.where(where) if suite.positions is not None else None
                line, column = (pos[0], pos[1]) if pos is not None else (None, None)
                if (suite.display, line, name) in seen:
                    continue
                seen.add((suite.display, line, name))
                at = ":".join(str(p) for p in (suite.display, line, column) if p is not None)
                found.append((suite.display, line or 0, column or 0, f"{at}: {hint}"))
    return out + [text for *_, text in sorted(found)]
