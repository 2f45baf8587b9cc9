"""What the checks share: reading an item's options, quoting values inside reasons, a reply
read as JSON, and a diff where one helps."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

from glmrun.errors import InvalidExpectationError

MAX_EXCERPT = 2000  # characters of a reply shown in a diff
SHORT = 80  # characters of a value quoted inside a reason


def string_option(spec: Mapping[str, Any], key: str) -> str:
    value = spec[key]
    if not isinstance(value, str):
        raise InvalidExpectationError(f"{key} must be a string, got {quote(value)}")
    return value


def number_option(spec: Mapping[str, Any], key: str) -> float:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidExpectationError(f"{key} must be a number, got {quote(value)}")
    return float(value)


def whole_number_option(spec: Mapping[str, Any], key: str) -> int:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidExpectationError(f"{key} must be a whole number, got {quote(value)}")
    return int(value)


def ignore_case_option(spec: Mapping[str, Any]) -> bool:
    value = spec.get("ignore_case", False)
    if not isinstance(value, bool):
        raise InvalidExpectationError(f"ignore_case must be true or false, got {quote(value)}")
    return value


def casefold_if(text: str, fold: bool) -> str:
    return text.casefold() if fold else text


def strip_fence(text: str) -> tuple[str, bool]:
    """Remove one code fence around the whole text, if there is one.

    Plain string work, not a regex: a backtracking pattern took seconds on a reply holding a
    long run of spaces.
    """
    newline = text.find("\n")
    if not text.startswith("```") or not text.endswith("```") or newline < 0:
        return text, False
    if newline + 1 > len(text) - 3 or not _FENCE_INFO.fullmatch(text[3:newline]):
        return text, False
    body = text[newline + 1 : -3].rstrip(" \t")
    return (body[:-1] if body.endswith("\n") else body), True


_FENCE_INFO = re.compile(r"[\w+.-]*[ \t]*")


def parse_json(text: str) -> tuple[Any, bool] | str:
    """(value, fenced) when the reply is JSON (possibly in one code fence), else why not."""
    body, fenced = strip_fence(text.strip())
    if not body.strip():
        return "the reply is empty"
    try:
        return json.loads(body), fenced
    except ValueError as exc:
        return f"{exc}: {quote(body)}"


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON means it: true is not 1, but 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def unified_diff(expected: str, actual: str) -> str:
    """A unified diff of expected vs the reply, the reply cut to MAX_EXCERPT characters."""
    if len(actual) > MAX_EXCERPT:
        actual = actual[:MAX_EXCERPT] + f"\n… ({len(actual) - MAX_EXCERPT} more characters)"
    if len(expected) > MAX_EXCERPT:
        expected = expected[:MAX_EXCERPT] + f"\n… ({len(expected) - MAX_EXCERPT} more characters)"
    lines = difflib.unified_diff(
        expected.splitlines(), actual.splitlines(), "expected", "reply", lineterm=""
    )
    return "\n".join(lines)


def show_number(value: float) -> str:
    """12.0 → '12', 12.345 → '12.3': milliseconds and limits as people write them."""
    rounded = round(float(value), 1)
    return str(int(rounded)) if rounded.is_integer() else str(rounded)


def quote(value: Any, limit: int = SHORT) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text) if isinstance(value, str) else text


def quote_json(value: Any, limit: int = SHORT) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def describe_exception(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
