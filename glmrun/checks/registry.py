"""The expectation kinds: each kind's check and options, and `check_all`, which runs a turn's
`expect:` items. A failing check never raises.

Each item is a mapping with exactly one kind key (contains, regex, json_schema, tool_call, ...)
plus that kind's options and an optional `name`. `check_all` turns every item into an
`ExpectationResult` with a reason a person can act on, and a unified diff where one helps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmrun.checks.behaviour import (
    check_citations,
    check_content_filter,
    check_finish_reason,
    check_max_latency_ms,
    check_max_tokens,
    check_max_ttft_ms,
)
from glmrun.checks.judge import check_judge
from glmrun.checks.outcome import Check, CheckEnv, Judge, TurnOutcome
from glmrun.checks.python import check_python
from glmrun.checks.structured import (
    check_is_json,
    check_json_path,
    check_json_schema,
    check_tool_call,
)
from glmrun.checks.text import (
    check_contains,
    check_equals,
    check_not_contains,
    check_regex,
    check_starts_with,
)
from glmrun.checks.values import describe_exception, quote
from glmrun.errors import InvalidExpectationError


@dataclass(frozen=True)
class Kind:
    """One expectation kind: its check, and the options it takes besides `name` (each named as
    in the schema's `expectation`)."""

    check: Check
    options: tuple[str, ...] = ()


# in the schema's order (x-kind-keys): a test holds the two equal
KIND_TABLE: dict[str, Kind] = {
    "contains": Kind(check_contains, ("ignore_case",)),
    "not_contains": Kind(check_not_contains, ("ignore_case",)),
    "equals": Kind(check_equals, ("ignore_case",)),
    "regex": Kind(check_regex, ("flags",)),
    "starts_with": Kind(check_starts_with, ("ignore_case",)),
    "is_json": Kind(check_is_json),
    "json_schema": Kind(check_json_schema),
    "json_path": Kind(check_json_path, ("value",)),
    "finish_reason": Kind(check_finish_reason),
    "tool_call": Kind(check_tool_call, ("arguments",)),
    "max_latency_ms": Kind(check_max_latency_ms),
    "max_ttft_ms": Kind(check_max_ttft_ms),
    "max_tokens": Kind(check_max_tokens, ("count",)),
    "python": Kind(check_python),
    "judge": Kind(check_judge, ("model",)),
    "citations": Kind(check_citations, ("domain",)),
    "content_filter": Kind(check_content_filter, ("compare", "role")),
}
KINDS: tuple[str, ...] = tuple(KIND_TABLE)


@dataclass(frozen=True)
class ExpectationResult:
    """One expectation's verdict; `to_dict` is its transcript form (the runner fills in `turn`)."""

    kind: str
    name: str | None
    spec: Mapping[str, Any]
    passed: bool
    reason: str
    diff: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "turn": None,
            "kind": self.kind,
            "name": self.name,
            "spec": dict(self.spec),
            "passed": self.passed,
            "reason": self.reason,
            "diff": self.diff,
        }


def check_all(
    expectations: Sequence[Mapping[str, Any]],
    outcome: TurnOutcome,
    *,
    suite_dir: Path,
    judge: Judge | None = None,
) -> list[ExpectationResult]:
    """Check every expectation in order; each yields exactly one result."""
    return [check_one(e, outcome, suite_dir=suite_dir, judge=judge) for e in expectations]


def check_one(
    spec: Mapping[str, Any],
    outcome: TurnOutcome,
    *,
    suite_dir: Path,
    judge: Judge | None = None,
) -> ExpectationResult:
    """Check one expectation; whatever goes wrong inside becomes a failed result."""
    if not isinstance(spec, Mapping):
        return ExpectationResult(
            "invalid", None, {"value": spec}, False,
            f"an expectation must be a mapping, got {type(spec).__name__} {quote(spec)}",
        )
    raw_name = spec.get("name")
    name = raw_name if isinstance(raw_name, str) else None
    kinds = [k for k in spec if k in KIND_TABLE]
    if len(kinds) != 1:
        if kinds:
            reason = f"an expectation has one kind, this one has {len(kinds)}: {', '.join(kinds)}"
        else:
            keys = ", ".join(str(k) for k in spec) or "none"
            reason = f"no known expectation kind among keys: {keys} (known: {', '.join(KINDS)})"
        return ExpectationResult("invalid", name, spec, False, reason)
    kind = kinds[0]
    try:
        if raw_name is not None and not isinstance(raw_name, str):
            raise InvalidExpectationError(f"name must be a string, got {quote(raw_name)}")
        allowed = {kind, "name", *KIND_TABLE[kind].options}
        unknown = [str(k) for k in spec if k not in allowed]
        if unknown:
            options = ", ".join(sorted(allowed - {kind})) or "none"
            raise InvalidExpectationError(
                f"unknown option {', '.join(unknown)} for {kind} (allowed: {options})")
        passed, reason, diff = KIND_TABLE[kind].check(spec, outcome, CheckEnv(suite_dir, judge))
    except InvalidExpectationError as exc:
        passed, reason, diff = False, f"invalid {kind} expectation: {exc}", None
    except Exception as exc:  # a check must never crash the run
        passed, reason, diff = False, f"{kind} check raised {describe_exception(exc)}", None
    return ExpectationResult(kind, name, dict(spec), passed, reason, diff)
