"""Run ids: `FILE[--CONVERSATION][--CASE][@MODEL][--rN]`, each part built from that run alone
(never from its siblings or from what else was selected), safe as a file name, bounded in length.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glmrun.load.spec import ConversationSpec

RESERVED_ID = "run"  # OUT/run.json is the manifest
_UNSAFE = re.compile(r'[\\/:*?"<>|\s\x00-\x1f]+')


def safe_name(text: str) -> str:
    """`text` with what a file name cannot hold replaced by `_`."""
    return _UNSAFE.sub("_", text).lstrip(".") or "_"


def file_key(file: Path, root: Path | None = None) -> str:
    """The file's part of its run ids: its path below the suite folder, without the suffix.

    `root` is the folder given on the command line (default: the file's own folder); folders
    are joined with `__`, so `glmrun convos/` names `convos/billing/refund.yaml`
    `billing__refund`.
    """
    try:
        relative = file.relative_to(root) if root is not None else Path(file.name)
    except ValueError:
        relative = Path(file.name)
    return "__".join(safe_name(part) for part in relative.with_suffix("").parts)


def conversation_key(key: str, file: Path, name: str) -> str:
    """The conversation's part of its run ids: the file's, then `--name` unless it is the stem."""
    return key if name == file.stem else f"{key}--{safe_name(name)}"


def run_id(stem: str, case: str | None, model: str | None, repeat_index: int | None) -> str:
    """`stem[--case][@model][--rN]`: each part depends on this run alone, never its siblings.

    One longer than MAX_ID_BYTES is shortened (see `_bounded`).
    """
    out = stem
    if case is not None:
        out += f"--{case}"
    if model is not None:
        out += f"@{safe_name(model)}"
    if repeat_index is not None:
        out += f"--r{repeat_index + 1}"
    return _bounded(out)


def case_key(row: Mapping[str, Any], index: int) -> str:
    """A case's part of its run ids: its `id` column or field, else `caseN` (its 1-based row)."""
    value = row.get("id")
    if value is None or value == "":
        return f"case{index + 1}"
    return safe_name(str(value))


def case_keys(cases: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[tuple[int, str]]]:
    """Every row's case key, "" for a row whose `id` an earlier row has, and those rows with
    the reason (row index, reason)."""
    keys = [case_key(row, i) for i, row in enumerate(cases)]
    duplicates: list[tuple[int, str]] = []
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in first:
            duplicates.append((i, f"case id '{key}' of row {i + 1} is already row "
                                  f"{first[key] + 1}'s: case ids must be unique"))
            keys[i] = ""
        first.setdefault(key, i)
    return keys, duplicates


def models_of(conv: ConversationSpec, cli: tuple[str, ...]) -> tuple[list[str | None], bool]:
    """The models a conversation runs on, and whether its run ids carry the model.

    A `models:` list or two or more `--model` make a matrix (ids carry the model, so adding a
    model renames nothing); one `--model` overrides the model of a conversation without
    `models:`, keeping its ids.
    """
    if len(cli) > 1:
        return list(cli), True
    if conv.models:
        return (list(cli) if cli else list(conv.models)), True
    return ([cli[0]] if cli else [None]), False


def clash(plan_id: str, first: str, second: str) -> str:
    """What to say when two runs (of files `first` and `second`) would share an id."""
    if first == second:
        return (f"two runs of {first} would share the id '{plan_id}': their names differ only "
                "in characters a file name cannot hold; rename one")
    return (f"two runs would share the id '{plan_id}' ({first} and {second}): rename one, or "
            "run the folder above both so that their ids carry their folders")


MAX_ID_BYTES = 200  # + '.json' and the writer's '.<name>.<pid>-<n>.tmp' stay within 255


def _bounded(run_id: str) -> str:
    """An id short enough for a file name: a long one keeps its start plus a hash of the whole.

    The hash depends on the full id alone, so it is the same from run to run (--resume finds
    it) and two long ids stay distinct.
    """
    raw = run_id.encode("utf-8")
    if len(raw) <= MAX_ID_BYTES:
        return run_id
    digest = hashlib.sha256(raw).hexdigest()[:12]
    head = raw[: MAX_ID_BYTES - len(digest) - 1].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def matches(pattern: str, name: str, run_id: str) -> bool:
    """`--filter`: a substring or glob of the conversation's name or the run's id."""
    return any(pattern in s or fnmatch.fnmatchcase(s, pattern) for s in (name, run_id))
