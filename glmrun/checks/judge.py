"""A model grades the reply against a rubric: the prompt glmrun sends, reading the verdict,
and the `judge` check."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from glmrun.checks.outcome import CheckEnv, TurnOutcome, Verdict
from glmrun.checks.values import describe_exception, quote, string_option, strip_fence
from glmrun.errors import InvalidExpectationError

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
    body = strip_fence(text.strip())[0]
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
    raise ValueError(f"the judge's answer holds no verdict: {quote(text)}")


def _verdict(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "pass", "passed", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "fail", "failed", "no"):
        return False
    return None


def check_judge(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    rubric = string_option(spec, "judge")
    model = spec.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidExpectationError(f"model must be a string, got {quote(model)}")
    if env.judge is None:
        return False, "no judge available", None
    try:
        verdict = env.judge(rubric, out.content, model)
    except Exception as exc:
        return False, f"judge raised {describe_exception(exc)}", None
    if (
        not isinstance(verdict, tuple)
        or len(verdict) != 2
        or not isinstance(verdict[0], bool)
        or not isinstance(verdict[1], str)
    ):
        return False, f"judge returned {quote(verdict)}; expected (bool, reason)", None
    passed, reason = verdict
    if not reason:
        return passed, f"judge {'passed' if passed else 'failed'}", None
    return passed, f"judge: {reason}", None
