"""Patterns compiled by RE2, for the `regex` kind and the JSON Schemas' `pattern`s."""

from __future__ import annotations

import functools
from typing import Any

from glmrun.errors import RegexError

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
