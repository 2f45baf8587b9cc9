"""Numbers the API's JSON can carry: NaN and ±Infinity are refused where they enter.

Python's `json` reads and writes `NaN` / `Infinity`, but they are not JSON: Zhipu cannot take
them and a strict encoder cannot write them. Conversation and cases files refuse them when they
load (with file:line), tool arguments and tool results as tool errors, and the transcript
encoder writes any that still reach it (a server reply, say) as `null`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from glmrun.errors import NonFiniteError


def _refuse_constant(name: str) -> Any:
    raise NonFiniteError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteError(f"{text} is out of range for a JSON number")
    return value


def loads(text: str) -> Any:
    """`json.loads` that refuses NaN, Infinity and out-of-range numbers like 1e400."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def find_non_finite(value: Any, path: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """The path of the first NaN / infinity inside lists and mappings, else None."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return where
        elif isinstance(item, dict):
            stack.extend((v, (*where, k)) for k, v in reversed(item.items()))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, (*where, i)) for i, v in reversed(list(enumerate(item))))
    return None


def nulled(value: Any) -> Any:
    """`value` with every NaN / infinity replaced by None (JSON.stringify's rule)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: nulled(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nulled(v) for v in value]
    return value
