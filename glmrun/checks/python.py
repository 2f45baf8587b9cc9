"""The suite's own checks: `python: "module:function"`, called with (reply, context)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from glmrun.checks.outcome import CheckEnv, TurnOutcome, Verdict
from glmrun.checks.values import describe_exception, quote, string_option
from glmrun.errors import HookLoadError
from glmrun.load.pyload import load_callable


def check_python(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    """Call the suite's `module:function` with (reply, context); see the docstring of `context`."""
    ref = string_option(spec, "python")
    try:
        func = load_callable(ref, env.suite_dir)
    except HookLoadError as exc:
        return False, f"python check {ref} could not be loaded: {exc}", None
    try:
        returned = func(out.content, python_context(out))
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # else they end a worker thread
        return False, f"python check {ref} raised {describe_exception(exc)}", None
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
        f"python check {ref} returned {quote(returned)} ({type(returned).__name__}); expected "
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
