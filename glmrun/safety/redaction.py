"""The one redactor every output goes through: the API key, each half of it, and passwords in
base URLs become *** in transcripts, JUnit, the terminal, --live, --dry-run, the record/cache
stores and the batch files.

Zhipu keys are `<id>.<secret>`, and the secret half alone is as sensitive as the whole key, so
each dot-separated part is a secret of its own. A form of 8 characters or more is replaced
wherever it appears; a shorter one (a test key) only as a whole word — not next to an ASCII
letter, digit, `_` or `-` — so a one-letter key `x` turns `x marks` into `*** marks` but
leaves `text` alone. Mapping keys of structured values (JSON field names) are replaced only by
the long forms, so a short test key never renames a transcript field.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

# the SDKs' name, the seed tutorial's, the international platform's (zai's ZaiClient)
KEY_ENV_VARS = ("ZHIPUAI_API_KEY", "ZHIPU_API_KEY", "ZAI_API_KEY")
REDACTED = "***"
MIN_ANYWHERE = 8  # a form this long is replaced wherever it appears; shorter: whole words only
_WORD = "A-Za-z0-9_-"  # characters that continue a word around a short form (ASCII only)


def env_keys(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The API keys set in the environment (both names: either may be the one in use)."""
    env = os.environ if env is None else env
    return tuple(env[name] for name in KEY_ENV_VARS if env.get(name))


def secret_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    """Every form to redact: each secret and, for `<id>.<secret>` keys, each part; longest
    first (so the whole key wins over its halves)."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.add(secret)
        if "." in secret:
            forms.update(part for part in secret.split(".") if part)
    return tuple(sorted(forms, key=lambda f: (-len(f), f)))


def _pattern(forms: Iterable[str]) -> re.Pattern[str] | None:
    alternatives = [
        re.escape(f) if len(f) >= MIN_ANYWHERE else f"(?<![{_WORD}]){re.escape(f)}(?![{_WORD}])"
        for f in forms
    ]
    return re.compile("|".join(alternatives)) if alternatives else None


class Redactor:
    """Replaces the secrets' forms with ***; an empty redactor changes nothing (and is falsy)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: tuple[str, ...] = tuple(dict.fromkeys(s for s in secrets if s))
        self.forms = secret_forms(self.secrets)
        self._text = _pattern(self.forms)
        self._keys = _pattern(f for f in self.forms if len(f) >= MIN_ANYWHERE)
        self.longest = max((len(f) for f in self.forms), default=0)

    @classmethod
    def of(cls, secrets: Iterable[str] | Redactor) -> Redactor:
        """`secrets` when it is a redactor already, else a redactor of them."""
        return secrets if isinstance(secrets, Redactor) else cls(secrets)

    def __bool__(self) -> bool:
        return self._text is not None

    def __repr__(self) -> str:  # never the secrets themselves
        return f"Redactor({len(self.secrets)} secrets)"

    @functools.cached_property
    def long(self) -> Redactor:
        """A redactor of the forms replaced anywhere (8 characters or more) only."""
        return Redactor(f for f in self.forms if len(f) >= MIN_ANYWHERE)

    @functools.cached_property
    def json_safe(self) -> bool:
        """True when every form survives JSON escaping unchanged (no quote, backslash or
        control character), so a search of the encoded text finds each one."""
        return all(json.dumps(f, ensure_ascii=False)[1:-1] == f for f in self.forms)

    @functools.cached_property
    def _needles(self) -> tuple[bytes, ...] | None:
        """Each form as UTF-8, when a byte search of encoded JSON can find every one."""
        if not self.json_safe:
            return None
        try:
            return tuple(f.encode("utf-8") for f in self.forms)
        except UnicodeEncodeError:  # a lone surrogate
            return None

    def may_be_in(self, encoded: bytes) -> bool:
        """False when `encoded`, a value's UTF-8 JSON, holds no secret, so `value()` of it
        would change nothing.

        A secret's characters survive JSON encoding unless it holds a quote, a backslash, a
        control character or a lone surrogate: then only the walk over the values can tell,
        and this is always True. Otherwise a byte search for each form answers; it finds
        every place the walk would (and more, as it ignores a short form's word boundaries:
        those values take the walk, which redacts exactly).
        """
        if self._text is None:
            return False
        needles = self._needles
        return needles is None or any(needle in encoded for needle in needles)

    def with_secrets(self, more: Iterable[str]) -> Redactor:
        """This redactor's secrets and `more`."""
        return Redactor((*self.secrets, *more))

    def found_in(self, text: str) -> bool:
        """True when `text` holds a form to redact."""
        return self._text is not None and self._text.search(text) is not None

    def text(self, text: str) -> str:
        """`text` with every form replaced by ***."""
        if self._text is None:
            return text
        return self._text.sub(REDACTED, text)

    def value(self, value: Any) -> Any:
        """A JSON-like value with its strings redacted (mapping keys by the long forms only)."""
        if self._text is None:
            return value
        return self._value(value)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            keys = self._keys
            return {
                (keys.sub(REDACTED, k) if keys is not None and isinstance(k, str) else k):
                    self._value(v)
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self._value(v) for v in value]
        return value

    def stream(self) -> StreamRedactor:
        """A redactor for text that arrives in pieces (a secret may be split between them)."""
        return StreamRedactor(self)


class StreamRedactor:
    """Redacts a text fed piece by piece: holds back a tail as long as the longest form (plus
    one character, to see where a short form's word ends) until it knows no secret starts
    there. `flush()` gives out the held tail at the end of the text."""

    def __init__(self, redactor: Redactor) -> None:
        self._pattern = redactor._text
        self._hold = redactor.longest + 1
        self._before = ""  # the last character given out: a short form's word must start here
        self._pending = ""

    def feed(self, text: str) -> str:
        """The part of the text so far that can be given out now, redacted."""
        if self._pattern is None:
            return text
        buf = self._before + self._pending + text
        start = len(self._before)
        out, end = self._redact(buf, start, max(start, len(buf) - self._hold))
        self._pending = buf[end:]
        if end > start:
            self._before = buf[end - 1]
        return out

    def flush(self) -> str:
        """The rest of the text, redacted; the redactor is ready for a new text."""
        if self._pattern is None:
            return ""
        buf = self._before + self._pending
        out, _end = self._redact(buf, len(self._before), len(buf))
        self._before = self._pending = ""
        return out

    def _redact(self, buf: str, start: int, cut: int) -> tuple[str, int]:
        """buf[start:] redacted up to `cut` (or to the end of a secret that crosses it)."""
        assert self._pattern is not None
        pieces: list[str] = []
        pos = start
        for match in self._pattern.finditer(buf, start):
            if match.start() >= cut:
                break
            pieces += [buf[pos:match.start()], REDACTED]
            pos = match.end()
        end = max(cut, pos)
        pieces.append(buf[pos:end])
        return "".join(pieces), end
