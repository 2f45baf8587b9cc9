"""The conversation file's JSON Schema (the only structural validator) and its errors as
located Problems a person can act on: unknown keys one by one with a "did you mean", kinds and
dependent options in words."""

from __future__ import annotations

import difflib
import functools
import json
import re
from pathlib import Path
from typing import Any

from glmrun.errors import Problem, display_path
from glmrun.load.yamlfile import SourceMap

SCHEMA_PATH = Path(__file__).parent.parent / "schemas" / "convo.schema.json"


@functools.cache
def load_schema(name: str = "convo") -> dict[str, Any]:
    """One of glmrun's JSON Schemas, glmrun/schemas/NAME.schema.json (convo: the conversation
    file's; project: the project table's), read once."""
    path = SCHEMA_PATH.with_name(f"{name}.schema.json")
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


@functools.cache
def schema_validator() -> Any:
    """jsonschema's validator of the schema: the one whose errors glmrun explains."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema())


@functools.cache
def _quick_validator(schema: str) -> Any | None:
    """jsonschema-rs's validator of glmrun/schemas/SCHEMA.schema.json, where it is installed
    (glmrun requires it on the platforms it has wheels for), else None."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    return jsonschema_rs.Draft202012Validator(load_schema(schema))


def surely_valid(data: Any, schema: str = "convo") -> bool:
    """True when jsonschema-rs finds `data` valid against glmrun's `schema` (convo: a
    conversation file; project: the project table): then jsonschema finds no error either.

    jsonschema-rs imports in a third of jsonschema's time and validates in a twentieth, so a
    valid file (most are) never loads jsonschema. An invalid one is checked again by
    jsonschema, whose errors say what is wrong; so is what jsonschema-rs cannot read (a YAML
    date where a string belongs, a key that is not a string) and anything it refuses that
    jsonschema takes (its `$` is ECMA-262's, which a trailing newline does not pass): the
    answer is jsonschema's. tests/test_fuzz_input.py checks on generated documents, and on
    every file of the test suite, that jsonschema-rs never takes what jsonschema refuses.
    """
    quick = _quick_validator(schema)
    if quick is None:
        return False
    try:
        return bool(quick.is_valid(data))
    except (ValueError, TypeError, OverflowError, RecursionError):
        return False


def schema_problems(data: Any, source: SourceMap, display: str) -> list[Problem]:
    """Every violation of the schema, as located, readable Problems."""
    if surely_valid(data):
        return []
    problems: list[Problem] = []
    for error in schema_validator().iter_errors(data):
        problems.extend(_explain(error, source, display))
    return problems


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _suggest(name: str, known: list[str]) -> str | None:
    """The known key the user probably meant: same letters (a transposition) first, then difflib."""
    for candidate in known:
        if candidate.lower() == name.lower() or sorted(candidate) == sorted(name):
            return candidate
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else None


def _explain(error: Any, source: SourceMap, display: str) -> list[Problem]:
    """Turn one jsonschema error into Problems: unknown keys one by one, the rest reworded."""
    path = tuple(error.absolute_path)
    validator, schema, instance = error.validator, error.schema, error.instance

    def at(p: tuple[Any, ...], reason: str, *, key: bool = False) -> Problem:
        line, column = source.where(p, key=key) or (None, None)
        return Problem(display, line, column, display_path(p), reason)

    if validator == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties", {}))
        out = []
        for name in instance:
            if name in known:
                continue
            reason = f"unknown key '{name}'"
            close = _suggest(str(name), known)
            if close:
                reason += f" (did you mean '{close}'?)"
            out.append(at((*path, name), reason, key=True))
        return out
    if "x-kind-keys" in schema and validator == "oneOf":
        if not isinstance(instance, dict) or any(k not in schema["properties"] for k in instance):
            return []  # the type error, or the unknown key, says it better
        kinds = schema["x-kind-keys"]
        present = [k for k in kinds if k in instance]
        what = "an expectation" if "contains" in kinds else "respond"
        if present:
            listed = " and ".join(f"'{k}'" for k in present)
            reason = f"{what} takes exactly one of its kinds; found {listed}"
        else:
            reason = f"{what} needs one of {', '.join(kinds)}"
        return [at(path, reason, key=True)]
    if error.context:
        from jsonschema.exceptions import best_match

        return _explain(best_match(error.context), source, display)
    if validator == "dependentRequired":
        match = re.match(r"'(.+)' is a dependency of '(.+)'", error.message)
        if match:
            need, key = match.groups()
            return [at((*path, key), f"'{key}' only applies together with '{need}'", key=True)]
    hint = schema.get("x-hint")
    if validator == "type":
        types = error.validator_value
        wanted = ", ".join(repr(t) for t in (types if isinstance(types, list) else [types]))
        reason = f"{_short(instance)} is not of type {wanted}"
    elif validator == "const":
        wanted = json.dumps(error.validator_value)
        reason = f"{json.dumps(instance, default=str)} is not allowed: must be {wanted}"
    elif validator == "pattern" and hint:
        reason = f"{_short(instance)} is not valid: {hint}"
    elif validator == "required":
        reason = error.message
        missing = re.match(r"'(.+)' is a required property", reason)
        if missing and missing.group(1) in ("model", "messages") and path[:1] == ("conversations",):
            reason += " (none is set at the top of the file)"
        return [at(path, reason, key=True)]
    else:
        reason = error.message.replace(repr(instance), _short(instance))
        if hint:
            reason += f" ({hint})"
    return [at(path, reason)]
