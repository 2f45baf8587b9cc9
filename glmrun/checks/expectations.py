"""Check a turn's outcome against the file's `expect:` items: a failing check never raises.

Each item is a mapping with exactly one kind key (contains, regex, json_schema, tool_call, ...)
plus that kind's options and an optional `name`. `check_all` turns every item into an
`ExpectationResult` with a reason a person can act on, and a unified diff where one helps.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glmrun.errors import HookLoadError, InvalidExpectationError, RegexError
from glmrun.load.pyload import load_callable
from glmrun.types import Reply, ToolCall

Judge = Callable[[str, str, str | None], tuple[bool, str]]

MAX_EXCERPT = 2000  # characters of a reply shown in a diff
SHORT = 80  # characters of a value quoted inside a reason


@dataclass(frozen=True)
class TurnOutcome:
    """What a turn produced, as the checks see it (see turn_outcome_from_replies)."""

    content: str
    finish_reason: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens
    variables: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[Mapping[str, Any], ...] = ()


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


def turn_outcome_from_replies(
    replies: Sequence[Reply],
    variables: Mapping[str, Any],
    messages: Sequence[Mapping[str, Any]],
    *,
    extracted: ToolCall | None = None,
) -> TurnOutcome:
    """Fold a turn's replies (one per tool round) into the outcome its expectations check.

    A turn that ended at an extraction call (a function without `respond:`) answers with that
    call's arguments: `is_json`, `json_schema`, `json_path` and the text checks see them.
    """
    last = replies[-1] if replies else None
    content = (last.content or "") if last else ""
    return TurnOutcome(
        content=extracted.arguments if extracted is not None else content,
        finish_reason=last.finish_reason if last else None,
        tool_calls=tuple(tc for r in replies for tc in r.tool_calls),
        latency_ms=sum(r.latency_ms for r in replies),
        ttft_ms=replies[0].ttft_ms if replies else None,
        completion_tokens=sum(r.usage.completion_tokens for r in replies if r.usage is not None),
        reasoning_tokens=sum(r.usage.reasoning_tokens for r in replies if r.usage is not None),
        variables=variables,
        messages=tuple(messages),
    )


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
            f"an expectation must be a mapping, got {type(spec).__name__} {_short(spec)}",
        )
    raw_name = spec.get("name")
    name = raw_name if isinstance(raw_name, str) else None
    kinds = [k for k in spec if k in _CHECKS]
    if len(kinds) != 1:
        if kinds:
            reason = f"an expectation has one kind, this one has {len(kinds)}: {', '.join(kinds)}"
        else:
            keys = ", ".join(str(k) for k in spec) or "none"
            reason = f"no known expectation kind among keys: {keys} (known: {', '.join(_CHECKS)})"
        return ExpectationResult("invalid", name, spec, False, reason)
    kind = kinds[0]
    try:
        if raw_name is not None and not isinstance(raw_name, str):
            raise InvalidExpectationError(f"name must be a string, got {_short(raw_name)}")
        allowed = {kind, "name", *_OPTIONS.get(kind, ())}
        unknown = [str(k) for k in spec if k not in allowed]
        if unknown:
            options = ", ".join(sorted(allowed - {kind})) or "none"
            raise InvalidExpectationError(
                f"unknown option {', '.join(unknown)} for {kind} (allowed: {options})")
        passed, reason, diff = _CHECKS[kind](spec, outcome, _Env(suite_dir, judge))
    except InvalidExpectationError as exc:
        passed, reason, diff = False, f"invalid {kind} expectation: {exc}", None
    except Exception as exc:  # a check must never crash the run
        passed, reason, diff = False, f"{kind} check raised {_exc(exc)}", None
    return ExpectationResult(kind, name, dict(spec), passed, reason, diff)


# --- judge -----------------------------------------------------------------------------------

_JUDGE_SYSTEM = (
    "You are a strict, impartial evaluator. You are given a rubric and a reply written by an "
    "AI assistant. Decide whether the reply satisfies the rubric; judge only what the rubric "
    "asks. Answer with exactly one JSON object and nothing else, in this form:\n"
    '{"pass": true, "reason": "one short sentence"}\n'
    'Use "pass": false when the reply does not satisfy the rubric.'
)


def build_judge_prompt(rubric: str, reply: str) -> list[dict[str, str]]:
    """The messages that ask a model to grade `reply` against `rubric`, answering as JSON."""
    user = (
        f"<rubric>\n{rubric}\n</rubric>\n\n"
        f"<reply>\n{reply}\n</reply>\n\n"
        'Answer with the JSON object {"pass": true|false, "reason": "..."} only.'
    )
    return [{"role": "system", "content": _JUDGE_SYSTEM}, {"role": "user", "content": user}]


_VERDICT_LINE = re.compile(r"^\W*(pass|fail)(?:ed|es)?\b[\s:.,;)\]*—–-]*(.*)$", re.I | re.S)


def parse_judge_answer(text: str) -> tuple[bool, str]:
    """Read a judge model's verdict: a JSON object (fenced or amid prose), or a PASS/FAIL line.

    Raises ValueError when no verdict can be found.
    """
    body = _strip_fence(text.strip())[0]
    candidates = [body]
    start, end = body.find("{"), body.rfind("}")
    if 0 <= start < end:
        candidates.append(body[start : end + 1])
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            verdict = _verdict(data.get("pass", data.get("passed")))
            if verdict is not None:
                reason = data.get("reason", "")
                return verdict, reason if isinstance(reason, str) else json.dumps(reason)
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    if lines:
        match = _VERDICT_LINE.match(lines[0])
        if match:
            reason = " ".join([match.group(2).strip(), *lines[1:]]).strip()
            return match.group(1).lower() == "pass", reason
    raise ValueError(f"the judge's answer holds no verdict: {_short(text)}")


def _verdict(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "pass", "passed", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "fail", "failed", "no"):
        return False
    return None


# --- the checks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Env:
    suite_dir: Path
    judge: Judge | None


Verdict = tuple[bool, str, str | None]
Check = Callable[[Mapping[str, Any], TurnOutcome, _Env], Verdict]


def _check_contains(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    needle = _str(spec, "contains")
    fold = _ignore_case(spec)
    note = " (ignoring case)" if fold else ""
    if _fold(needle, fold) in _fold(out.content, fold):
        return True, f"contains {_short(needle)}{note}", None
    diff = _diff(needle, out.content)
    return False, f"expected reply to contain {_short(needle)}{note}", diff


def _check_not_contains(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    needle = _str(spec, "not_contains")
    fold = _ignore_case(spec)
    note = " (ignoring case)" if fold else ""
    at = _fold(out.content, fold).find(_fold(needle, fold)) if needle else 0
    if at < 0:
        return True, f"does not contain {_short(needle)}{note}", None
    line = out.content.count("\n", 0, at) + 1
    begin, end = max(0, at - 30), min(len(out.content), at + len(needle) + 30)
    context = out.content[begin:end]
    context = ("…" if begin else "") + context + ("…" if end < len(out.content) else "")
    return (
        False,
        f"expected reply not to contain {_short(needle)}{note}, found on line {line}: "
        f"{_short(context)}",
        None,
    )


def _check_equals(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    expected = _str(spec, "equals").strip()
    actual = out.content.strip()
    fold = _ignore_case(spec)
    note = " (ignoring case)" if fold else ""
    if _fold(expected, fold) == _fold(actual, fold):
        return True, f"equals {_short(expected)}{note}", None
    reason = f"expected reply to equal {_short(expected)}{note}, got {_short(actual)}"
    return False, reason, _diff(expected, actual)


def _check_starts_with(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    """Leading whitespace of the reply is ignored: models often open with a newline."""
    prefix = _str(spec, "starts_with")
    actual = out.content.lstrip()
    if actual.startswith(prefix):
        return True, f"starts with {_short(prefix)}", None
    head = actual[: len(prefix) + 20]
    head += "…" if len(actual) > len(head) else ""
    reason = f"expected reply to start with {_short(prefix)}, got {_short(head)}"
    # compare the prefix with as many lines of the reply as it has: the rest is not the point
    shown = "\n".join(actual.splitlines()[: max(1, len(prefix.splitlines()))])
    return False, reason, _diff(prefix, shown)


_FLAGS = "ims"


def compile_regex(pattern: str, flags: str = "") -> Any:
    """`pattern` compiled by RE2: matching takes linear time, whatever the pattern or reply.

    Python's `re` backtracks: `(a+)+$` on a long reply runs for hours and Ctrl-C cannot stop
    it. RE2 has no backreferences and no lookaround; such patterns raise RegexError.
    """
    unknown = [letter for letter in flags if letter not in _FLAGS]
    if unknown:
        raise RegexError(f"unknown regex flag {unknown[0]!r} (allowed: i, m, s)")
    return _compile(pattern, "".join(sorted(set(flags))))


@functools.lru_cache(maxsize=512)
def _compile(pattern: str, flags: str) -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False  # else RE2 prints its own copy of the error on stderr
    options.case_sensitive = "i" not in flags
    options.dot_nl = "s" in flags
    try:
        return re2.compile(f"(?m){pattern}" if "m" in flags else pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        if "escape" in str(reason) or "perl operator" in str(reason):
            reason = f"{reason} (RE2 syntax: no backreferences, lookaround or \\Z)"
        raise RegexError(str(reason)) from None


def _check_regex(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    pattern = _str(spec, "regex")
    flags = spec.get("flags", "")
    if not isinstance(flags, str):
        raise InvalidExpectationError(f"flags must be a string of i, m, s, got {_short(flags)}")
    try:
        compiled = compile_regex(pattern, flags)
    except RegexError as exc:
        if str(exc).startswith("unknown regex flag"):
            raise InvalidExpectationError(str(exc)) from None
        return False, f"invalid regex {_short(pattern)}: {exc}", None
    shown = f"/{pattern}/{''.join(sorted(set(flags)))}"
    match = compiled.search(out.content)
    if match:
        return True, f"matches {shown}: {_short(match.group(0))}", None
    return False, f"expected reply to match {shown}", None


def _check_is_json(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    """`is_json: false` asks for the opposite: a reply that is not JSON."""
    want = spec["is_json"]
    if not isinstance(want, bool):
        raise InvalidExpectationError(f"is_json must be true or false, got {_short(want)}")
    parsed = _parse_json(out.content)
    if isinstance(parsed, str):
        if want:
            return False, f"expected reply to be JSON: {parsed}", None
        return True, f"reply is not JSON ({parsed})", None
    value, fenced = parsed
    what = _json_type(value) + (", in a code fence" if fenced else "")
    if want:
        return True, f"reply is JSON ({what})", None
    return False, f"expected reply not to be JSON, but it parses as JSON ({what})", None


def _check_json_schema(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    schema = spec["json_schema"]
    if not isinstance(schema, (Mapping, bool)):
        raise InvalidExpectationError(
            f"json_schema must be a JSON Schema object, got {_short(schema)}")
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except Exception as exc:
        return False, f"invalid JSON schema: {_first_line(getattr(exc, 'message', str(exc)))}", None
    parsed = _parse_json(out.content)
    if isinstance(parsed, str):
        return False, f"expected reply to be JSON matching the schema: {parsed}", None
    # by location in the reply, so the reason reads top to bottom whatever the schema's order
    errors = sorted(
        validator.iter_errors(parsed[0]),
        key=lambda e: [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in e.path],
    )
    if not errors:
        return True, "reply matches the JSON schema", None
    shown = "; ".join(f"{e.json_path}: {_first_line(e.message)}" for e in errors[:3])
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


def _check_json_path(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    """Passes when any match equals `value`; without `value`, when the path matches at all."""
    path = _str(spec, "json_path")
    expected = spec.get("value", _MISSING)
    try:
        expr = _jsonpath(path)
    except Exception as exc:
        return False, f"invalid JSON path {_short(path)}: {_first_line(str(exc))}", None
    parsed = _parse_json(out.content)
    if isinstance(parsed, str):
        return False, f"expected reply to be JSON for {path}: {parsed}", None
    found = [m.value for m in expr.find(parsed[0])]
    if not found:
        return False, f"{path} matched nothing in the reply", None
    shown = ", ".join(_short_json(v) for v in found[:5]) + (", …" if len(found) > 5 else "")
    if expected is _MISSING:
        return True, f"{path} found {shown}", None
    if any(_json_equal(v, expected) for v in found):
        return True, f"{path} == {_short_json(expected)}", None
    return False, f"expected {path} to equal {_short_json(expected)}, found {shown}", None


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
        return f"invalid JSON path: {_first_line(str(exc))}"
    return None


def _check_finish_reason(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    expected = _str(spec, "finish_reason")
    if out.finish_reason == expected:
        return True, f"finish_reason is {expected!r}", None
    got = repr(out.finish_reason) if out.finish_reason is not None else "none"
    return False, f"expected finish_reason {expected!r}, got {got}", None


def _check_tool_call(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    """Some call has the name and (a superset of) the arguments: on a turn, any call of its tool
    rounds; on the conversation, any call of any turn (the runner gathers them).

    Arguments match as a subset recursively through objects; lists and scalars must be equal.
    """
    tool = _str(spec, "tool_call")
    expected = spec.get("arguments")
    if expected is not None and not isinstance(expected, Mapping):
        raise InvalidExpectationError(f"arguments must be a mapping, got {_short(expected)}")
    want = f"a call to tool {tool!r}"
    if expected:
        want += f" with arguments {_short_json(expected)}"
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
            seen.append(f"invalid JSON {_short(tc.arguments)} ({exc})")
            continue
        if not expected or _is_subset(expected, args):
            return True, f"called {tool!r} with {_short_json(args)}", None
        seen.append(_short_json(args))
    return False, f"expected {want}; got {'; '.join(seen)}", None


def _is_subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and _is_subset(v, actual[k]) for k, v in expected.items()
        )
    return _json_equal(expected, actual)


def _check_max_latency_ms(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    limit = _number(spec, "max_latency_ms")
    if out.latency_ms <= limit:
        return True, f"latency {_num(out.latency_ms)} ms (limit {_num(limit)} ms)", None
    return False, f"latency {_num(out.latency_ms)} ms exceeds the limit of {_num(limit)} ms", None


def _check_max_ttft_ms(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    limit = _number(spec, "max_ttft_ms")
    if out.ttft_ms is None:
        return False, "no time to first token was measured (only stream mode measures it)", None
    if out.ttft_ms <= limit:
        return True, f"time to first token {_num(out.ttft_ms)} ms (limit {_num(limit)} ms)", None
    return (
        False,
        f"time to first token {_num(out.ttft_ms)} ms exceeds the limit of {_num(limit)} ms",
        None,
    )


def _check_max_tokens(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    """`count`: completion (all, reasoning included, as billed), reply or reasoning tokens."""
    limit = _number(spec, "max_tokens")
    count = spec.get("count", "completion")
    used = {"completion": out.completion_tokens, "reasoning": out.reasoning_tokens,
            "reply": out.completion_tokens - out.reasoning_tokens}.get(count)
    if used is None:
        raise ValueError(f"count must be completion, reply or reasoning, not {count!r}")
    if used <= limit:
        return True, f"{used} {count} tokens (limit {_num(limit)})", None
    return False, f"{used} {count} tokens exceed the limit of {_num(limit)}", None


def _check_python(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    """Call the suite's `module:function` with (reply, context); see the docstring of `context`."""
    ref = _str(spec, "python")
    try:
        func = load_callable(ref, env.suite_dir)
    except HookLoadError as exc:
        return False, f"python check {ref} could not be loaded: {exc}", None
    try:
        returned = func(out.content, python_context(out))
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # else they end a worker thread
        return False, f"python check {ref} raised {_exc(exc)}", None
    if isinstance(returned, bool):
        return returned, f"python check {ref} {'passed' if returned else 'failed'}", None
    if (
        isinstance(returned, tuple)
        and len(returned) == 2
        and isinstance(returned[0], bool)
        and isinstance(returned[1], str)
    ):
        return returned[0], _user_reason(returned[1], ref, returned[0]), None
    if isinstance(returned, Mapping) and isinstance(returned.get("passed"), bool):
        reason = returned.get("reason", "")
        if isinstance(reason, str):
            return returned["passed"], _user_reason(reason, ref, returned["passed"]), None
    return (
        False,
        f"python check {ref} returned {_short(returned)} ({type(returned).__name__}); expected "
        'a bool, a (bool, reason) tuple or {"passed": bool, "reason": str}',
        None,
    )


def python_context(out: TurnOutcome) -> dict[str, Any]:
    """The second argument of a python check: copies, so a check cannot alter the run.

    Keys: finish_reason, tool_calls (in message form: {"id", "type", "function": {"name",
    "arguments"}}, arguments as the raw JSON text), variables, messages, latency_ms, ttft_ms,
    completion_tokens.
    """
    return {
        "finish_reason": out.finish_reason,
        "tool_calls": [tc.to_message() for tc in out.tool_calls],
        "variables": json.loads(json.dumps(dict(out.variables), default=str)),
        "messages": json.loads(json.dumps([dict(m) for m in out.messages], default=str)),
        "latency_ms": out.latency_ms,
        "ttft_ms": out.ttft_ms,
        "completion_tokens": out.completion_tokens,
    }


def _user_reason(reason: str, ref: str, passed: bool) -> str:
    return reason or f"python check {ref} {'passed' if passed else 'failed'}"


def _check_judge(spec: Mapping[str, Any], out: TurnOutcome, env: _Env) -> Verdict:
    rubric = _str(spec, "judge")
    model = spec.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidExpectationError(f"model must be a string, got {_short(model)}")
    if env.judge is None:
        return False, "no judge available", None
    try:
        verdict = env.judge(rubric, out.content, model)
    except Exception as exc:
        return False, f"judge raised {_exc(exc)}", None
    if (
        not isinstance(verdict, tuple)
        or len(verdict) != 2
        or not isinstance(verdict[0], bool)
        or not isinstance(verdict[1], str)
    ):
        return False, f"judge returned {_short(verdict)}; expected (bool, reason)", None
    passed, reason = verdict
    if not reason:
        return passed, f"judge {'passed' if passed else 'failed'}", None
    return passed, f"judge: {reason}", None


_CHECKS: dict[str, Check] = {
    "contains": _check_contains,
    "not_contains": _check_not_contains,
    "equals": _check_equals,
    "regex": _check_regex,
    "starts_with": _check_starts_with,
    "is_json": _check_is_json,
    "json_schema": _check_json_schema,
    "json_path": _check_json_path,
    "finish_reason": _check_finish_reason,
    "tool_call": _check_tool_call,
    "max_latency_ms": _check_max_latency_ms,
    "max_ttft_ms": _check_max_ttft_ms,
    "max_tokens": _check_max_tokens,
    "python": _check_python,
    "judge": _check_judge,
}
KINDS: tuple[str, ...] = tuple(_CHECKS)

_OPTIONS: dict[str, tuple[str, ...]] = {
    "contains": ("ignore_case",),
    "not_contains": ("ignore_case",),
    "equals": ("ignore_case",),
    "regex": ("flags",),
    "json_path": ("value",),
    "tool_call": ("arguments",),
    "judge": ("model",),
    "max_tokens": ("count",),
}


# --- helpers ---------------------------------------------------------------------------------

def _strip_fence(text: str) -> tuple[str, bool]:
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


def _parse_json(text: str) -> tuple[Any, bool] | str:
    """(value, fenced) when the reply is JSON (possibly in one code fence), else why not."""
    body, fenced = _strip_fence(text.strip())
    if not body.strip():
        return "the reply is empty"
    try:
        return json.loads(body), fenced
    except ValueError as exc:
        return f"{exc}: {_short(body)}"


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON means it: true is not 1, but 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _diff(expected: str, actual: str) -> str:
    """A unified diff of expected vs the reply, the reply cut to MAX_EXCERPT characters."""
    if len(actual) > MAX_EXCERPT:
        actual = actual[:MAX_EXCERPT] + f"\n… ({len(actual) - MAX_EXCERPT} more characters)"
    if len(expected) > MAX_EXCERPT:
        expected = expected[:MAX_EXCERPT] + f"\n… ({len(expected) - MAX_EXCERPT} more characters)"
    lines = difflib.unified_diff(
        expected.splitlines(), actual.splitlines(), "expected", "reply", lineterm=""
    )
    return "\n".join(lines)


def _str(spec: Mapping[str, Any], key: str) -> str:
    value = spec[key]
    if not isinstance(value, str):
        raise InvalidExpectationError(f"{key} must be a string, got {_short(value)}")
    return value


def _number(spec: Mapping[str, Any], key: str) -> float:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidExpectationError(f"{key} must be a number, got {_short(value)}")
    return float(value)


def _ignore_case(spec: Mapping[str, Any]) -> bool:
    value = spec.get("ignore_case", False)
    if not isinstance(value, bool):
        raise InvalidExpectationError(f"ignore_case must be true or false, got {_short(value)}")
    return value


def _fold(text: str, fold: bool) -> str:
    return text.casefold() if fold else text


def _num(value: float) -> str:
    """12.0 → '12', 12.345 → '12.3': milliseconds and limits as people write them."""
    rounded = round(float(value), 1)
    return str(int(rounded)) if rounded.is_integer() else str(rounded)


def _short(value: Any, limit: int = SHORT) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text) if isinstance(value, str) else text


def _short_json(value: Any, limit: int = SHORT) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _exc(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
