"""The schema-valid part of a file that fails its schema, so that the later stages (cases,
templates, media, expectations, ids) still check the rest of it in the same run.

Each value the schema refuses is left out (an unknown key, a wrong value, a list item), then
whatever that leaves invalid (a message without its role), until the rest is valid. A refused
`vars` or `cases` takes its whole conversation with it (a file-level one: the whole file), since
templates rendered without those variables would report errors the file does not have (and a
refused `conversations` the whole file, whose top level is no conversation of its own; a
conversation's refused `messages` or `turns`, the conversation, lest the file's apply). Left-out
list items renumber the items after them; the part keeps the positions of the file and the
names of its paths as the file has them (`renamed`), so later problems point at the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from glmrun.errors import display_path
from glmrun.load.yamlfile import SourceMap, YamlPath

INPUTS = ("vars", "cases")  # what templates render with: not to be checked without
REPLACING = ("messages", "turns")  # a conversation's own, without which the file's would apply
MAX_ROUNDS = 100  # each round leaves out at least one more value; a file this broken stops


@dataclass(frozen=True)
class ValidPart:
    """The schema-valid rest of a document, its positions, and its paths' names in the file."""

    data: dict[str, Any]
    source: SourceMap
    renamed: dict[str, str]  # display path in `data` → the same value's path in the file


def valid_part(data: dict[str, Any], source: SourceMap, validator: Any) -> ValidPart | None:
    """The document less what `validator` refuses; None when that is the whole document."""
    removed: set[YamlPath] = set()
    for _ in range(MAX_ROUNDS):
        part = _Part(source)
        kept = part.copy(data, removed, (), ())
        culprits = [c for error in validator.iter_errors(kept) for c in _culprits(error)]
        if not culprits:
            return ValidPart(kept, SourceMap(part.values, part.keys), part.renamed)
        for path in culprits:
            owner = _owner(part.original(path))
            if owner == ():
                return None
            removed.add(owner)
    return None


def _culprits(error: Any) -> Iterable[YamlPath]:
    """The values one schema error refuses: each unknown key, else the value it is about."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        return [(*path, name) for name in error.instance if name not in known]
    return [path]


def _owner(path: YamlPath) -> YamlPath:
    """What leaving `path` out takes with it: a refused vars or cases, its conversation (the
    file for the file's); a refused `conversations`, the file (its top level would run as a
    conversation); a conversation's refused messages or turns, it (the file's would apply)."""
    if (path[:1] and path[0] in INPUTS) or path == ("conversations",):
        return ()
    if path[:1] == ("conversations",) and len(path) > 2 and (
            path[2] in INPUTS or (len(path) == 3 and path[2] in REPLACING)):
        return path[:2]
    return path


class _Part:
    """One copy of the document without the removed paths, with its positions and names."""

    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.values: dict[YamlPath, tuple[int, int]] = {}
        self.keys: dict[YamlPath, tuple[int, int]] = {}
        self.moved: dict[YamlPath, YamlPath] = {}  # list item in the copy → in the file
        self.renamed: dict[str, str] = {}

    def copy(self, value: Any, removed: set[YamlPath], at: YamlPath, was: YamlPath) -> Any:
        if was in self.source.values:
            self.values[at] = self.source.values[was]
        if was in self.source.keys:
            self.keys[at] = self.source.keys[was]
        if at != was:
            self.renamed[display_path(at)] = display_path(was)
        if isinstance(value, dict):
            return {k: self.copy(v, removed, (*at, k), (*was, k))
                    for k, v in value.items() if (*was, k) not in removed}
        if isinstance(value, list):
            out: list[Any] = []
            for i, item in enumerate(value):
                if (*was, i) in removed:
                    continue
                here = (*at, len(out))
                if here != (*was, i):
                    self.moved[here] = (*was, i)
                out.append(self.copy(item, removed, here, (*was, i)))
            return out
        return value

    def original(self, path: YamlPath) -> YamlPath:
        """The file's path of a path in the copy."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.moved:
                return (*self.moved[path[:end]], *path[end:])
        return path
