"""What a turn produced, as the checks see it, and what every check is handed besides."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glmrun.types import Reply, ToolCall

Judge = Callable[[str, str, str | None], tuple[bool, str]]


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
    # the replies' blocks besides the message, every tool round's, as the API sent them
    web_search: tuple[Mapping[str, Any], ...] = ()  # citations of a web_search tool
    content_filter: tuple[Mapping[str, Any], ...] = ()  # {role, level} of the safety review


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
        web_search=tuple(w for r in replies for w in r.web_search),
        content_filter=tuple(c for r in replies for c in r.content_filter),
    )


@dataclass(frozen=True)
class CheckEnv:
    """What a check may use besides the outcome: the suite's folder (python checks load from
    it) and the judge."""

    suite_dir: Path
    judge: Judge | None


Verdict = tuple[bool, str, str | None]


Check = Callable[[Mapping[str, Any], TurnOutcome, CheckEnv], Verdict]
