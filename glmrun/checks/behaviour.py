"""Checks on how the reply came: finish_reason, latency, time to first token, tokens, and
Zhipu's blocks besides the message: `citations` (web_search) and `content_filter`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from glmrun.checks.outcome import CheckEnv, TurnOutcome, Verdict
from glmrun.checks.values import (
    number_option,
    quote,
    show_number,
    string_option,
    whole_number_option,
)
from glmrun.errors import InvalidExpectationError


def check_finish_reason(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    expected = string_option(spec, "finish_reason")
    if out.finish_reason == expected:
        return True, f"finish_reason is {expected!r}", None
    got = repr(out.finish_reason) if out.finish_reason is not None else "none"
    return False, f"expected finish_reason {expected!r}, got {got}", None


def check_max_latency_ms(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    limit = number_option(spec, "max_latency_ms")
    took, most = show_number(out.latency_ms), show_number(limit)
    if out.latency_ms <= limit:
        return True, f"latency {took} ms (limit {most} ms)", None
    return False, f"latency {took} ms exceeds the limit of {most} ms", None


def check_max_ttft_ms(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    limit = number_option(spec, "max_ttft_ms")
    if out.ttft_ms is None:
        return False, "no time to first token was measured (only stream mode measures it)", None
    took, most = show_number(out.ttft_ms), show_number(limit)
    if out.ttft_ms <= limit:
        return True, f"time to first token {took} ms (limit {most} ms)", None
    return False, f"time to first token {took} ms exceeds the limit of {most} ms", None


def check_max_tokens(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    """`count`: completion (all, reasoning included, as billed), reply or reasoning tokens."""
    limit = number_option(spec, "max_tokens")
    count = spec.get("count", "completion")
    used = {"completion": out.completion_tokens, "reasoning": out.reasoning_tokens,
            "reply": out.completion_tokens - out.reasoning_tokens}.get(count)
    if used is None:
        raise ValueError(f"count must be completion, reply or reasoning, not {count!r}")
    if used <= limit:
        return True, f"{used} {count} tokens (limit {show_number(limit)})", None
    return False, f"{used} {count} tokens exceed the limit of {show_number(limit)}", None


def check_citations(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    """At least `citations` web_search results; with `domain`, one whose link is on that host
    or below it (`example.com` takes `news.example.com`)."""
    least = whole_number_option(spec, "citations")
    domain = spec.get("domain")
    if domain is not None and (not isinstance(domain, str) or not domain.strip(".")):
        raise InvalidExpectationError(f"domain must be a host name, got {quote(domain)}")
    links = [str(w.get("link") or "") for w in out.web_search]
    if len(links) < least:
        return False, f"expected at least {_count(least, 'citation')}, got {len(links)}", None
    if domain is None:
        return True, f"{_count(len(links), 'citation')} (at least {least})", None
    want = domain.strip(".").lower()
    hosts = [(urlsplit(link).hostname or "").rstrip(".") for link in links]
    for link, host in zip(links, hosts, strict=True):
        if host == want or host.endswith("." + want):
            return True, f"{_count(len(links), 'citation')}, one from {want}: {link}", None
    seen = ", ".join(dict.fromkeys(h for h in hosts if h)) or "no host"
    return False, f"no citation from {want} among {_count(len(links), 'citation')}: {seen}", None


# Zhipu's chat completion reference (docs.bigmodel.cn, 对话补全): `content_filter` is a list of
# {role, level}, role the stage reviewed (assistant, user, history), level 0-3 with 0 the most
# severe. The stored copy of that page searched here held the response example without this
# block (docs.z.ai's shows `web_search`: title, content, link, media, icon, refer,
# publish_date), so these words are the reference's as relayed, not re-read.
CONTENT_FILTER_ROLES = ("assistant", "user", "history")
CONTENT_FILTER_COMPARE = ("equal", "at_most", "at_least")


def check_content_filter(spec: Mapping[str, Any], out: TurnOutcome, env: CheckEnv) -> Verdict:
    """The reply's content-filter level is the most severe (the lowest: 0 is the most severe,
    3 the least) of its `content_filter` entries, of `role` when given; no entry, no level.
    `compare`: equal (the default); at_most (that severe or more); at_least (no more severe
    than that: a reply with no entry passes)."""
    want = whole_number_option(spec, "content_filter")
    compare = spec.get("compare", "equal")
    role = spec.get("role")
    if compare not in CONTENT_FILTER_COMPARE:
        raise InvalidExpectationError(
            f"compare must be one of {', '.join(CONTENT_FILTER_COMPARE)}, got {quote(compare)}")
    if role is not None and role not in CONTENT_FILTER_ROLES:
        raise InvalidExpectationError(
            f"role must be one of {', '.join(CONTENT_FILTER_ROLES)}, got {quote(role)}")
    levels = [e.get("level") for e in out.content_filter if role is None or e.get("role") == role]
    numbers = [lv for lv in levels if isinstance(lv, int) and not isinstance(lv, bool)]
    level = min(numbers) if numbers else None
    passed = {"equal": level == want,
              "at_most": level is not None and level <= want,
              "at_least": level is None or level >= want}[compare]
    what = "content_filter level" + (f" of {role}" if role else "")
    wanted = {"equal": f"{want}", "at_most": f"at most {want} (that severe or more)",
              "at_least": f"at least {want} (no more severe)"}[compare]
    got = f"{what} {level}" if level is not None else f"no {what}"
    if passed:
        return True, f"{got} (expected {wanted})", None
    return False, f"expected {what} {wanted}, got {got}", None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

