"""Answer the model's function calls from the file's `respond:` declarations."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmrun.errors import HookLoadError, ToolFailure
from glmrun.load.pyload import load_callable
from glmrun.safety import finite
from glmrun.types import ToolCall

Render = Callable[[Any, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class ToolAnswer:
    """What glmrun sends back as the tool message, and whether it was an error."""

    content: str
    error: str | None
    duration_ms: float

    def to_record(self, call: ToolCall, turn: int, round_: int) -> dict[str, Any]:
        return {
            "turn": turn, "round": round_, "id": call.id, "name": call.name,
            "arguments": call.arguments,
            "result": None if self.error else self.content,
            "error": self.error, "duration_ms": round(self.duration_ms, 3),
        }


def answer_tool_call(
    call: ToolCall,
    responders: Mapping[str, Mapping[str, Any]],
    *,
    variables: Mapping[str, Any],
    suite_dir: Path,
    render: Render,
) -> ToolAnswer:
    """Run one tool call; every failure becomes a tool error sent back to the model."""
    started = time.perf_counter()
    try:
        content = _answer(call, responders, variables, suite_dir, render)
        error = None
    except ToolFailure as exc:
        error = str(exc)
        content = json.dumps({"error": error}, ensure_ascii=False)
    return ToolAnswer(content, error, (time.perf_counter() - started) * 1000)


def _answer(
    call: ToolCall,
    responders: Mapping[str, Mapping[str, Any]],
    variables: Mapping[str, Any],
    suite_dir: Path,
    render: Render,
) -> str:
    responder = responders.get(call.name)
    if responder is None:
        known = ", ".join(sorted(responders)) or "none"
        raise ToolFailure(f"unknown function '{call.name}' (declared: {known})")
    try:
        args = finite.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError as exc:
        raise ToolFailure(f"arguments are not valid JSON: {exc.msg} at char {exc.pos}") from exc
    except (ValueError, RecursionError) as exc:  # NaN, Infinity, 1e400; nested too deep
        raise ToolFailure(f"arguments are not valid JSON: {exc}") from exc
    if not isinstance(args, dict):
        raise ToolFailure(f"arguments must be a JSON object, got {type(args).__name__}")
    scope = {**variables, "args": args}
    if "python" in responder:
        ref = str(responder["python"])
        value = _call_python(ref, args, scope, suite_dir)
        try:
            return _to_text(value)
        except (TypeError, ValueError) as exc:  # a set, an object, a circular structure ...
            raise ToolFailure(f"{ref} returned a value that is not JSON: {exc}") from exc
    if "cases" in responder:
        for case in responder["cases"]:
            when = case.get("when") or {}
            if all(args.get(k) == v for k, v in when.items()):
                return _to_text(_render(render, case.get("result"), scope))
        if "default" in responder:
            return _to_text(_render(render, responder["default"], scope))
        raise ToolFailure(
            f"no case of '{call.name}' matches arguments {json.dumps(args, ensure_ascii=False)}"
        )
    if "result" in responder:
        return _to_text(_render(render, responder["result"], scope))
    raise ToolFailure(f"function '{call.name}' has no respond: result, cases or python")


def _render(render: Render, value: Any, scope: Mapping[str, Any]) -> Any:
    try:
        return render(value, scope)
    except Exception as exc:
        raise ToolFailure(f"rendering the result failed: {exc}") from exc


def _call_python(ref: str, args: dict[str, Any], scope: Mapping[str, Any], root: Path) -> Any:
    try:
        func = load_callable(ref, root)
    except HookLoadError as exc:
        raise ToolFailure(str(exc)) from exc
    try:
        return func(**args)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # else they end a worker thread
        raise ToolFailure(f"{ref} raised {type(exc).__name__}: {exc}") from exc


def _to_text(value: Any) -> str:
    # allow_nan=False: NaN and Infinity are not JSON, the API cannot take them
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           allow_nan=False)
