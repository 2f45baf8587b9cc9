"""The one render: a conversation's case row rendered into the request as it is sent.

Everything that can be rendered before a model answers is rendered here, once per case row
(the models and repeats of a row share it): the model, params, messages, further turns and
expectations, local images inlined. What comes out is wire-ready: tools without glmrun's
`respond` (taken off once per conversation, before rendering: `ToolPlan`), `extra_body` lifted
into the body, Zhipu's value rules applied (glmrun.plan.sendrules). Every call mode and
`--dry-run` build their requests from it (`RunPlan.request`); nothing renders it again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from glmrun.checks.regex import compile_regex
from glmrun.checks.structured import json_path_problem, schema_patterns
from glmrun.errors import MediaError, RegexError, RenderError, display_path
from glmrun.load.spec import ConversationSpec, SuiteSpec, source_path
from glmrun.plan import sendrules
from glmrun.plan.media import inline_parts
from glmrun.plan.templating import Renderer

Where = tuple[str, int | None, int | None, str]  # file, line, column, readable path
Failure = tuple[Where, str]  # and the reason


@dataclass(frozen=True, slots=True)
class PlannedTurn:
    """A further user turn, rendered."""

    content: str | tuple[Mapping[str, Any], ...]
    expect: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class RenderedRun:
    """One case row of a conversation, rendered: what its runs send and check."""

    model: str | None  # None when --model or a matrix gives it (the file's is not rendered)
    params: Mapping[str, Any]  # as sent: see the module docstring
    messages: tuple[Mapping[str, Any], ...]  # the opening messages, as sent
    turns: tuple[PlannedTurn, ...]
    expect: tuple[Mapping[str, Any], ...]  # on the final reply


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """A conversation's tools, split once: what is sent, and what glmrun answers with."""

    params: Mapping[str, Any]  # the file's params, tools without `respond` (unrendered)
    responders: Mapping[str, Mapping[str, Any]]  # function name → raw `respond` spec
    extractors: frozenset[str]  # functions without `respond`: a call ends the turn

    @classmethod
    def of(cls, conv: ConversationSpec) -> ToolPlan:
        tools = conv.params.get("tools") or []
        params = dict(conv.params)
        if tools:
            params["tools"] = [{k: v for k, v in t.items() if k != "respond"} for t in tools]
        return cls(
            params,
            {t["function"]["name"]: t["respond"] for t in tools if "respond" in t},
            frozenset(t["function"]["name"] for t in tools
                      if t.get("type") == "function" and "respond" not in t),
        )


def wire_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Rendered params as sent: `extra_body` keys lifted to the top, temperature / top_p as
    Zhipu takes them (glmrun.plan.sendrules)."""
    out = {k: v for k, v in params.items() if k != "extra_body"}
    out.update(params.get("extra_body") or {})
    return sendrules.sampling(out)


def render_run(
    suite: SuiteSpec,
    conv: ConversationSpec,
    tools: ToolPlan,
    renderer: Renderer,
    variables: Mapping[str, Any],
    *,
    models: Sequence[str] = (),
    like: RenderedRun | None = None,
) -> RenderedRun | list[Failure]:
    """The row rendered, or every failure as (location, reason).

    `models`: those --model or a matrix send the row to (the file's model is then not
    rendered); without them, the file's model. Images are checked against each.

    `like` (the conversation's first row) lends its objects to every equal part, so a template
    that renders the same for every row (an include, a file variable) is held once.
    """
    failures: list[Failure] = []
    root = conv.file.parent

    def render(value: Any, path: tuple[Any, ...]) -> Any:
        try:
            return renderer.render_value(value, variables, path)
        except RenderError as exc:
            failures.append((locate(suite, conv, exc.path), exc.reason))
            return value

    def content(value: Any, path: tuple[Any, ...]) -> Any:
        def failed(exc: MediaError) -> None:  # every image of the content, not only the first
            failures.append((locate(suite, conv, (*path, *exc.path)), exc.reason))

        return inline_parts(render(value, path), root=root, on_error=failed,
                            models=models or ((model,) if model else ()))

    model = None if models else render(conv.model, ("model",))
    rendered_params = render(tools.params, ("params",))
    if like is not None and rendered_params is tools.params:
        params = like.params  # no template in params: every row sends the first row's
    else:
        params = wire_params(rendered_params)

    messages = []
    for i, message in enumerate(conv.messages):
        out = render({k: v for k, v in message.items() if k != "content"}, ("messages", i))
        if "content" in message:
            out["content"] = content(message["content"], ("messages", i, "content"))
        if out.get("tool_calls"):
            out["tool_calls"] = [_with_text_arguments(call) for call in out["tool_calls"]]
        messages.append(out)

    turns = []
    for i, turn in enumerate(conv.turns):
        text = content(list(turn.content) if isinstance(turn.content, tuple) else turn.content,
                       ("turns", i, "content"))
        turns.append(PlannedTurn(
            text if isinstance(text, str) else tuple(text),
            _expectations(turn.expect, ("turns", i, "expect"), render, suite, conv, failures),
        ))
    expect = _expectations(conv.expect, ("expect",), render, suite, conv, failures)
    if failures:
        return failures
    run = RenderedRun(model, params, tuple(messages), tuple(turns), expect)
    return run if like is None else _shared(run, like)


def _with_text_arguments(call: Mapping[str, Any]) -> Mapping[str, Any]:
    """A few-shot tool call as sent: its arguments as JSON text (a file may write a mapping)."""
    arguments = call["function"]["arguments"]
    if isinstance(arguments, str):
        return call
    text = json.dumps(arguments, ensure_ascii=False)
    return {**call, "function": {**call["function"], "arguments": text}}


def _shared(value: Any, like: Any) -> Any:
    """`value`, with every part equal to the same part of `like` replaced by like's object."""
    if value is like:
        return like
    if type(value) is not type(like):
        return value
    if isinstance(value, RenderedRun):
        return RenderedRun(*(_shared(getattr(value, f), getattr(like, f))
                             for f in RenderedRun.__slots__))
    if isinstance(value, PlannedTurn):
        return PlannedTurn(_shared(value.content, like.content),
                           _shared(value.expect, like.expect))
    if isinstance(value, dict):
        if value.keys() != like.keys():
            return value
        out = {k: _shared(v, like[k]) for k, v in value.items()}
        return like if all(out[k] is like[k] for k in out) else out
    if isinstance(value, (list, tuple)):
        if len(value) != len(like):
            return value
        items = [_shared(v, w) for v, w in zip(value, like, strict=True)]
        if all(a is b for a, b in zip(items, like, strict=True)):
            return like
        return type(value)(items)
    return like if value == like and type(value) in (str, int, float, bool) else value


def _expectations(
    items: Sequence[Mapping[str, Any]],
    path: tuple[Any, ...],
    render: Callable[[Any, tuple[Any, ...]], Any],
    suite: SuiteSpec,
    conv: ConversationSpec,
    failures: list[Failure],
) -> tuple[Mapping[str, Any], ...]:
    """Rendered expectations, with the checks only a rendered value allows (regex, schema)."""
    out = []
    for j, item in enumerate(items):
        rendered = render(item, (*path, j))
        reason = _expectation_problem(rendered)
        if reason is not None:
            key = next(k for k in ("regex", "json_schema", "json_path") if k in rendered)
            failures.append((locate(suite, conv, (*path, j, key)), reason))
        out.append(rendered)
    return tuple(out)


def _expectation_problem(item: Mapping[str, Any]) -> str | None:
    if isinstance(item.get("json_path"), str):
        return json_path_problem(item["json_path"])
    if "regex" in item:
        try:
            compile_regex(item["regex"], item.get("flags", ""))
        except RegexError as exc:
            return f"invalid regular expression: {exc}"
    if "json_schema" in item:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(item["json_schema"])
        except SchemaError as exc:
            return f"invalid JSON Schema: {exc.message}"
        for pattern in schema_patterns(item["json_schema"]):
            try:
                compile_regex(pattern)
            except RegexError as exc:
                return f"invalid JSON Schema: pattern {pattern!r}: {exc}"
    return None


def locate(suite: SuiteSpec, conv: ConversationSpec, path: tuple[Any, ...]) -> Where:
    """(file, line, column, readable path) of a path in the merged conversation."""
    src = source_path(conv, path)
    source = suite.positions
    if source is None:
        return suite.display, None, None, display_path(src)
    while src and src not in source.values:
        src = src[:-1]  # e.g. a turn written as a bare string has no `content` key
    line, column = source.where(src) or (None, None)
    return suite.display, line, column, display_path(src)
