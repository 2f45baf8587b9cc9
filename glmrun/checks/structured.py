"""Checks on the reply as data: is_json, json_schema, json_path, and tool_call (the calls'
arguments)."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Mapping
from typing import Any

from glmrun.checks.outcome import CheckEnv, TurnOutcome, Verdict
from glmrun.checks.regex import compile_regex
from glmrun.checks.values import (
    first_line,
    json_equal,
    parse_json,
    quote,
    quote_json,
    string_option,
)
from glmrun.errors import InvalidExpectationError
from glmrun.load.yamlfile import json_type


def check_is_json(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    """`is_json: true`, the only value the schema takes."""
    if spec["is_json"] is not True:
        raise InvalidExpectationError(f"is_json must be true, got {quote(spec['is_json'])}")
    parsed = parse_json(out.content)
    if isinstance(parsed, str):
        return False, f"expected reply to be JSON: {parsed}", None
    value, fenced = parsed
    return True, f"reply is JSON ({json_type(value)}{', in a code fence' if fenced else ''})", None


def check_json_schema(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    schema = spec["json_schema"]
    if not isinstance(schema, (Mapping, bool)):
        raise InvalidExpectationError(
            f"json_schema must be a JSON Schema object, got {quote(schema)}")
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except Exception as exc:
        return False, f"invalid JSON schema: {first_line(getattr(exc, 'message', str(exc)))}", None
    parsed = parse_json(out.content)
    if isinstance(parsed, str):
        return False, f"expected reply to be JSON matching the schema: {parsed}", None
    # by location in the reply, so the reason reads top to bottom whatever the schema's order
    errors = sorted(
        validator.iter_errors(parsed[0]),
        key=lambda e: [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in e.path],
    )
    if not errors:
        return True, "reply matches the JSON schema", None
    shown = "; ".join(f"{e.json_path}: {first_line(e.message)}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return False, f"reply does not match the JSON schema: {shown}{more}", None


@functools.lru_cache(maxsize=128)
def _validator(schema_json: str) -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    for pattern in schema_patterns(schema):
        compile_regex(pattern)  # RegexError: reported as an invalid schema
    # `format` is only an annotation in 2020-12; whoever writes `format: date` means a check
    return _re2_validator()(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_patterns(schema: Any) -> list[str]:
    """Every `pattern` and `patternProperties` regex in a JSON Schema (RE2 must compile them)."""
    found: list[str] = []
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("pattern"), str):
                found.append(item["pattern"])
            if isinstance(item.get("patternProperties"), dict):
                found.extend(str(k) for k in item["patternProperties"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


@functools.cache
def _re2_validator() -> Any:
    """Draft 2020-12 with `pattern` / `patternProperties` matched by RE2 (linear time)."""
    from jsonschema import Draft202012Validator, ValidationError, validators

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "string") and not compile_regex(patrn).search(instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Any:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for k, v in instance.items():
                if compile_regex(patrn).search(k):
                    yield from validator.descend(v, subschema, path=k, schema_path=patrn)

    return validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator, {"pattern": pattern, "patternProperties": pattern_properties}
    )


_MISSING = object()


def check_json_path(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    """Passes when any match equals `value`; without `value`, when the path matches at all."""
    path = string_option(spec, "json_path")
    expected = spec.get("value", _MISSING)
    try:
        expr = _jsonpath(path)
    except Exception as exc:
        return False, f"invalid JSON path {quote(path)}: {first_line(str(exc))}", None
    parsed = parse_json(out.content)
    if isinstance(parsed, str):
        return False, f"expected reply to be JSON for {path}: {parsed}", None
    found = [m.value for m in expr.find(parsed[0])]
    if not found:
        return False, f"{path} matched nothing in the reply", None
    shown = ", ".join(quote_json(v) for v in found[:5]) + (", …" if len(found) > 5 else "")
    if expected is _MISSING:
        return True, f"{path} found {shown}", None
    if any(json_equal(v, expected) for v in found):
        return True, f"{path} == {quote_json(expected)}", None
    return False, f"expected {path} to equal {quote_json(expected)}, found {shown}", None


_jsonpath_lock = threading.Lock()


@functools.lru_cache(maxsize=256)
def _jsonpath(path: str) -> Any:
    """The parsed path; ValueError for a regex inside it (jsonpath-ng runs those with `re`)."""
    from jsonpath_ng.ext.parser import parse

    with _jsonpath_lock:  # ply parsers are not documented as thread-safe
        expr = parse(path)
    if _has_regex(expr):
        raise ValueError("a regex inside json_path (=~, sub()) is not supported: jsonpath-ng "
                         "runs it with Python's backtracking re; check the value with regex:")
    return expr


def _has_regex(expr: Any) -> bool:
    stack = [expr]
    while stack:
        node = stack.pop()
        if getattr(node, "op", None) == "=~" or type(node).__name__ == "Sub":
            return True
        if isinstance(node, (list, tuple)):
            stack.extend(node)
        elif type(node).__module__.startswith("jsonpath_ng"):
            stack.extend(vars(node).values())
    return False


def json_path_problem(path: str) -> str | None:
    """Why a `json_path:` cannot be used (syntax, a regex inside it), else None."""
    try:
        _jsonpath(path)
    except Exception as exc:
        return f"invalid JSON path: {first_line(str(exc))}"
    return None


def check_tool_call(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    """Some call has the name and (a superset of) the arguments: on a turn, any call of its tool
    rounds; on the conversation, any call of any turn (the runner gathers them).

    Arguments match as a subset recursively through objects; lists and scalars must be equal.
    """
    tool = string_option(spec, "tool_call")
    expected = spec.get("arguments")
    if expected is not None and not isinstance(expected, Mapping):
        raise InvalidExpectationError(f"arguments must be a mapping, got {quote(expected)}")
    want = f"a call to tool {tool!r}"
    if expected:
        want += f" with arguments {quote_json(expected)}"
    if not out.tool_calls:
        return False, f"expected {want}, but no tool was called", None
    calls = [tc for tc in out.tool_calls if tc.name == tool]
    if not calls:
        called = ", ".join(dict.fromkeys(tc.name for tc in out.tool_calls))
        return False, f"expected {want}; tools called: {called}", None
    seen: list[str] = []
    for tc in calls:
        try:
            args = json.loads(tc.arguments) if tc.arguments.strip() else {}
        except ValueError as exc:
            seen.append(f"invalid JSON {quote(tc.arguments)} ({exc})")
            continue
        if not expected or _is_subset(expected, args):
            return True, f"called {tool!r} with {quote_json(args)}", None
        seen.append(quote_json(args))
    return False, f"expected {want}; got {'; '.join(seen)}", None


def _is_subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and _is_subset(v, actual[k]) for k, v in expected.items()
        )
    return json_equal(expected, actual)
