"""Case tables: the rows of a `cases:` file (.csv, .jsonl or .yaml, inside the suite folder),
held to the YAML loader's limits, or the reason the file cannot be used."""

from __future__ import annotations

import collections
import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glmrun.errors import CasesFileError, OutsideSuiteError, YamlLoadError
from glmrun.load.yamlfile import MAX_DEPTH, MAX_NODES, json_type, load_yaml, read_text
from glmrun.safety import finite
from glmrun.safety.suitefiles import inside_suite


def read_cases_file(
    base: Path, ref: str, cache: dict[Path, tuple[Mapping[str, Any], ...] | str]
) -> tuple[Mapping[str, Any], ...] | str:
    """Rows of a .csv/.jsonl/.yaml cases file, or the reason it cannot be used."""
    try:
        path = inside_suite(base, ref, "cases file")
    except OutsideSuiteError as exc:
        return str(exc)
    if path not in cache:
        try:
            rows = _read_cases(path, ref)
        except CasesFileError as exc:
            cache[path] = f"cases file '{ref}': {exc}"
        else:
            cache[path] = rows if rows else f"cases file '{ref}' has no rows"
    return cache[path]


def _read_cases(path: Path, ref: str) -> tuple[Mapping[str, Any], ...]:
    if not path.is_file():
        raise CasesFileError("not found" if not path.exists() else "not a file")
    try:
        _raw, text = read_text(path, ref)
    except YamlLoadError as exc:
        raise CasesFileError(exc.problem.reason) from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows(text)
    if suffix == ".jsonl":
        return _jsonl_rows(text)
    try:
        doc = load_yaml(text, ref)
    except YamlLoadError as exc:
        raise CasesFileError(f"line {exc.problem.line}: {exc.problem.reason}") from None
    if doc.problems:
        first = doc.problems[0]
        raise CasesFileError(f"line {first.line}: {first.reason}")
    if not isinstance(doc.data, list):
        found = json_type(doc.data, article=True)
        raise CasesFileError(f"expected an array of objects, found {found}")
    for i, row in enumerate(doc.data):
        if not isinstance(row, dict):
            line = (doc.source.where((i,)) or (0, 0))[0]
            found = json_type(row, article=True)
            raise CasesFileError(f"line {line}: item {i} is {found}, expected an object")
    return tuple(doc.data)


def _csv_rows(text: str) -> tuple[Mapping[str, Any], ...]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames
        if not header:
            raise CasesFileError("no header row")
        if len(header) > MAX_NODES:
            raise CasesFileError(f"line 1: more than {MAX_NODES} columns")
        dupes = sorted(h for h, n in collections.Counter(header).items() if n > 1)
        if dupes:
            raise CasesFileError(f"line 1: duplicate column {dupes[0]!r}")
        rows = []
        cells = 0
        for row in reader:
            if None in row:
                raise CasesFileError(f"line {reader.line_num}: more fields than the header has")
            if any(v is None for v in row.values()):
                raise CasesFileError(f"line {reader.line_num}: fewer fields than the header has")
            cells += len(header)
            if cells > MAX_NODES:
                raise CasesFileError(f"line {reader.line_num}: more than {MAX_NODES} values")
            rows.append(row)
    except csv.Error as exc:
        raise CasesFileError(f"line {reader.line_num}: {exc}") from None
    return tuple(rows)


def _jsonl_rows(text: str) -> tuple[Mapping[str, Any], ...]:
    rows = []
    values = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = finite.loads(line)
        except json.JSONDecodeError as exc:
            reason = f"line {number}: invalid JSON: {exc.msg} (column {exc.colno})"
            raise CasesFileError(reason) from None
        except RecursionError:
            raise CasesFileError(f"line {number}: nested too deep") from None
        except ValueError as exc:  # NaN / Infinity / 1e400, an integer too long to read
            raise CasesFileError(f"line {number}: {exc}") from None
        if not isinstance(row, dict):
            found = json_type(row, article=True)
            raise CasesFileError(f"line {number}: expected a JSON object, found {found}")
        values += _count_values(row, number)
        if values > MAX_NODES:
            raise CasesFileError(f"line {number}: more than {MAX_NODES} values")
        rows.append(row)
    return tuple(rows)


def _count_values(value: Any, number: int) -> int:
    """How many values a row holds (the YAML loader's limits: MAX_NODES, MAX_DEPTH levels)."""
    count = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise CasesFileError(f"line {number}: nesting deeper than {MAX_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return count
