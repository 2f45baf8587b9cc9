"""Checks on the reply's text: contains, not_contains, equals, starts_with, regex."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from glmrun.checks.outcome import CheckEnv, TurnOutcome, Verdict
from glmrun.checks.regex import compile_regex
from glmrun.checks.values import (
    casefold_if,
    ignore_case_option,
    quote,
    string_option,
    unified_diff,
)
from glmrun.errors import InvalidExpectationError, RegexError


def check_contains(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    needle = string_option(spec, "contains")
    fold = ignore_case_option(spec)
    note = " (ignoring case)" if fold else ""
    if casefold_if(needle, fold) in casefold_if(out.content, fold):
        return True, f"contains {quote(needle)}{note}", None
    diff = unified_diff(needle, out.content)
    return False, f"expected reply to contain {quote(needle)}{note}", diff


def check_not_contains(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    needle = string_option(spec, "not_contains")
    fold = ignore_case_option(spec)
    note = " (ignoring case)" if fold else ""
    at = casefold_if(out.content, fold).find(casefold_if(needle, fold)) if needle else 0
    if at < 0:
        return True, f"does not contain {quote(needle)}{note}", None
    line = out.content.count("\n", 0, at) + 1
    begin, end = max(0, at - 30), min(len(out.content), at + len(needle) + 30)
    context = out.content[begin:end]
    context = ("…" if begin else "") + context + ("…" if end < len(out.content) else "")
    return (
        False,
        f"expected reply not to contain {quote(needle)}{note}, found on line {line}: "
        f"{quote(context)}",
        None,
    )


def check_equals(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    expected = string_option(spec, "equals").strip()
    actual = out.content.strip()
    fold = ignore_case_option(spec)
    note = " (ignoring case)" if fold else ""
    if casefold_if(expected, fold) == casefold_if(actual, fold):
        return True, f"equals {quote(expected)}{note}", None
    reason = f"expected reply to equal {quote(expected)}{note}, got {quote(actual)}"
    return False, reason, unified_diff(expected, actual)


def check_starts_with(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    """Leading whitespace of the reply is ignored: models often open with a newline."""
    prefix = string_option(spec, "starts_with")
    fold = ignore_case_option(spec)
    note = " (ignoring case)" if fold else ""
    actual = out.content.lstrip()
    if casefold_if(actual, fold).startswith(casefold_if(prefix, fold)):
        return True, f"starts with {quote(prefix)}{note}", None
    head = actual[: len(prefix) + 20]
    head += "…" if len(actual) > len(head) else ""
    reason = f"expected reply to start with {quote(prefix)}{note}, got {quote(head)}"
    # compare the prefix with as many lines of the reply as it has: the rest is not the point
    shown = "\n".join(actual.splitlines()[: max(1, len(prefix.splitlines()))])
    return False, reason, unified_diff(prefix, shown)


def check_regex(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    pattern = string_option(spec, "regex")
    flags = spec.get("flags", "")
    if not isinstance(flags, str):
        raise InvalidExpectationError(f"flags must be a string of i, m, s, got {quote(flags)}")
    try:
        compiled = compile_regex(pattern, flags)
    except RegexError as exc:
        if str(exc).startswith("unknown regex flag"):
            raise InvalidExpectationError(str(exc)) from None
        return False, f"invalid regex {quote(pattern)}: {exc}", None
    shown = f"/{pattern}/{''.join(sorted(set(flags)))}"
    match = compiled.search(out.content)
    if match:
        return True, f"matches {shown}: {quote(match.group(0))}", None
    return False, f"expected reply to match {shown}", None
