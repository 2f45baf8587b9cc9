"""YAML → plain data plus the line/column of every key and value, safe against hostile input.

`yaml.safe_load` semantics (same tags, same scalars, merge keys) built from PyYAML's event stream
(libyaml's C parser when available) instead of its recursive composer, so that depth, size and
alias expansion are capped before they can hang or crash, and duplicate keys are reported.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from glmrun.errors import Problem, YamlLoadError, display_path

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

YamlPath = tuple[Any, ...]
Position = tuple[int, int]

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000  # counted after alias expansion: stops "billion laughs"
MAX_EXPANDED_CHARS = 20 * 1024 * 1024  # scalar characters after alias expansion

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

_resolver = Resolver()
_constructor = SafeConstructor()


@dataclass
class SourceMap:
    """Positions (1-based line, column) of the values and keys of one YAML document."""

    values: dict[YamlPath, Position] = field(default_factory=dict)
    keys: dict[YamlPath, Position] = field(default_factory=dict)

    def where(self, path: YamlPath, *, key: bool = False) -> Position | None:
        """Position of `path` (its key if asked and known), else of its nearest known ancestor."""
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            pos = self.values.get(path[:end])
            if pos is not None:
                return pos
        return None


@dataclass(frozen=True)
class LoadedYaml:
    """A parsed document, its source map, and non-fatal problems (duplicate keys)."""

    data: Any
    source: SourceMap
    problems: tuple[Problem, ...] = ()


def read_text(path: Path, display: str, *, limit: int = MAX_FILE_BYTES) -> tuple[bytes, str]:
    """Read a UTF-8 file (BOM allowed) within the size cap: (raw bytes, text)."""
    try:
        # O_NONBLOCK: opening a FIFO named *.yaml must not wait for a writer; it is refused
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as fh:
            kind = os.fstat(fd).st_mode
            if not stat.S_ISREG(kind):
                reason = f"not a regular file (a {_file_kind(kind)})"
                raise YamlLoadError(Problem(display, None, None, "", reason))
            raw = fh.read(limit + 1)
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
        raise YamlLoadError(Problem(display, None, None, "", reason)) from None
    if len(raw) > limit:
        reason = f"file is larger than {limit // (1024 * 1024)} MB"
        raise YamlLoadError(Problem(display, None, None, "", reason))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        reason = f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded"
        raise YamlLoadError(Problem(display, line, column, "", reason)) from None
    return raw, text


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "folder"), (stat.S_ISCHR, "device"),
             (stat.S_ISBLK, "device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def load_yaml(text: str, display: str, *, without_case_rows: bool = False) -> LoadedYaml:
    """Parse one YAML document; raises YamlLoadError for syntax errors and hostile input.

    `without_case_rows` leaves the positions inside `cases` rows out of the source map (the
    bulk of a big suite's map): for a first, optimistic load that re-parses if anything is wrong.
    """
    builder = _Builder(display, without_case_rows=without_case_rows)
    try:
        builder.run(yaml.parse(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.context_mark is not None:
            reason += f" ({exc.context} at line {exc.context_mark.line + 1})"
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise YamlLoadError(Problem(display, line, column, "", reason)) from None
    except yaml.YAMLError as exc:
        raise YamlLoadError(Problem(display, None, None, "", str(exc))) from None
    return LoadedYaml(builder.root, builder.source, tuple(builder.problems))


def load_yaml_file(
    path: Path, display: str, *, without_case_rows: bool = False
) -> tuple[bytes, LoadedYaml]:
    """Read and parse a YAML file: (raw bytes, document)."""
    raw, text = read_text(path, display)
    return raw, load_yaml(text, display, without_case_rows=without_case_rows)


@dataclass
class _Anchor:
    value: Any
    nodes: int
    chars: int


@dataclass
class _Frame:
    container: dict[Any, Any] | list[Any]
    path: YamlPath
    anchor: str | None
    nodes_at_start: int
    chars_at_start: int
    key: Any = None
    key_pos: Position | None = None
    has_key: bool = False
    quiet: bool = False  # its children's positions are not recorded (inside `cases` rows)
    explicit: dict[Any, Position] = field(default_factory=dict)
    merges: list[tuple[Any, Position, Any]] = field(default_factory=list)


_NO_KEY = object()


class _Builder:
    """Turns a YAML event stream into Python values, non-recursively, with caps and positions."""

    def __init__(self, display: str, *, without_case_rows: bool = False) -> None:
        self.display = display
        self.without_case_rows = without_case_rows
        self.source = SourceMap()
        self.problems: list[Problem] = []
        self.anchors: dict[str, _Anchor] = {}
        self.key_strings: dict[str, str] = {}
        self.stack: list[_Frame] = []
        self.nodes = 0
        self.chars = 0
        self.root: Any = None
        self.documents = 0

    def fail(self, mark: Any, reason: str) -> NoReturn:
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise YamlLoadError(Problem(self.display, line, column, "", reason))

    def count(self, nodes: int, chars: int, mark: Any) -> None:
        self.nodes += nodes
        self.chars += chars
        if self.nodes > MAX_NODES:
            self.fail(mark, f"document too large: more than {MAX_NODES} values "
                            "(after expanding aliases)")
        if self.chars > MAX_EXPANDED_CHARS:
            self.fail(mark, "document too large: aliases expand to more than "
                            f"{MAX_EXPANDED_CHARS // (1024 * 1024)} MB of text")

    def run(self, events: Iterator[yaml.Event]) -> None:
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                self.documents += 1
                if self.documents > 1:
                    self.fail(event.start_mark, "expected a single document in the stream, "
                                                "found another document")
            elif isinstance(event, yaml.ScalarEvent):
                self.scalar(event)
            elif isinstance(event, yaml.AliasEvent):
                self.alias(event)
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                self.start(event)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                self.end(event)

    def child_path(self) -> YamlPath:
        if not self.stack:
            return ()
        frame = self.stack[-1]
        if isinstance(frame.container, list):
            return (*frame.path, len(frame.container))
        if frame.has_key:
            return (*frame.path, frame.key)
        return (*frame.path, _NO_KEY)  # a key being parsed; never stored

    def scalar(self, event: yaml.ScalarEvent) -> None:
        tag = event.tag
        if tag is None or tag == "!":
            tag = _resolver.resolve(ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        self.count(1, len(event.value), event.start_mark)
        if tag == _STR_TAG:
            value: Any = event.value
        elif tag == _MERGE_TAG:
            value = _MERGE
        else:
            ctor = _constructor.yaml_constructors.get(tag)
            if ctor is None:
                self.fail(event.start_mark, f"unsupported tag '{_short_tag(tag)}'")
            mark: Any = event.start_mark
            node = ScalarNode(tag, event.value, mark, mark, event.style)
            try:
                value = ctor(_constructor, node)
            except (ConstructorError, ValueError) as exc:
                self.fail(event.start_mark, f"bad {tag.rsplit(':', 1)[-1]} value: {exc}")
            if isinstance(value, float) and not math.isfinite(value):
                mark, path = event.start_mark, self.child_path()
                path = path[:-1] if path and path[-1] is _NO_KEY else path
                self.problems.append(Problem(
                    self.display, mark.line + 1, mark.column + 1, display_path(path),
                    f"{event.value!r} is not a finite number: JSON (what the API takes) "
                    "cannot carry NaN or infinity (quote it to mean the text)",
                ))
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(value, 1, len(event.value))
        self.attach(value, event.start_mark)

    def alias(self, event: yaml.AliasEvent) -> None:
        anchor = self.anchors.get(event.anchor or "")
        if anchor is None:
            self.fail(event.start_mark, f"found undefined alias '{event.anchor}'")
            return
        self.count(anchor.nodes, anchor.chars, event.start_mark)
        self.attach(anchor.value, event.start_mark)

    def start(self, event: yaml.MappingStartEvent | yaml.SequenceStartEvent) -> None:
        mapping = isinstance(event, yaml.MappingStartEvent)
        if event.tag not in (None, "!", _MAP_TAG if mapping else _SEQ_TAG):
            self.fail(event.start_mark, f"unsupported tag '{_short_tag(event.tag)}'")
        if len(self.stack) >= MAX_DEPTH:
            self.fail(event.start_mark, f"nesting deeper than {MAX_DEPTH} levels")
        if self.stack and isinstance(self.stack[-1].container, dict) and not self.stack[-1].has_key:
            self.fail(event.start_mark, "a mapping or list cannot be used as a key")
        path = self.child_path()
        mark: Any = event.start_mark
        quiet = bool(self.stack) and self.stack[-1].quiet
        if not quiet:
            self.source.values[path] = (mark.line + 1, mark.column + 1)
        self.count(1, 0, event.start_mark)
        container: dict[Any, Any] | list[Any] = {} if mapping else []
        self.stack.append(_Frame(
            container, path, event.anchor, self.nodes - 1, self.chars,
            quiet=quiet or (self.without_case_rows and _holds_case_rows(path)),
        ))

    def end(self, event: yaml.MappingEndEvent | yaml.SequenceEndEvent) -> None:
        frame = self.stack.pop()
        if frame.merges:
            self.apply_merges(frame)
        if frame.anchor is not None:
            nodes, chars = self.nodes - frame.nodes_at_start, self.chars - frame.chars_at_start
            self.anchors[frame.anchor] = _Anchor(frame.container, nodes, chars)
        self.attach(frame.container, None, placed=True)

    def attach(self, value: Any, mark: Any, *, placed: bool = False) -> None:
        pos = (mark.line + 1, mark.column + 1) if mark is not None else None
        if not self.stack:
            if pos is not None:
                self.source.values[()] = pos
            self.root = value
            return
        frame = self.stack[-1]
        if isinstance(frame.container, list):
            if pos is not None and not placed and not frame.quiet:
                self.source.values[(*frame.path, len(frame.container))] = pos
            frame.container.append(value)
            return
        if not frame.has_key:
            if isinstance(value, (dict, list)):
                self.fail(mark, "a mapping or list cannot be used as a key")
            frame.key, frame.key_pos, frame.has_key = value, pos, True
            return
        key, key_pos = frame.key, frame.key_pos
        frame.key, frame.key_pos, frame.has_key = None, None, False
        assert key_pos is not None
        if key is _MERGE:
            frame.merges.append((value, key_pos, mark))
            return
        if not _hashable(key):
            self.fail(_FakeMark(key_pos), "this key cannot be used in a mapping")
        if type(key) is str:  # one string per distinct key: 20,000 case rows share `n`
            key = self.key_strings.setdefault(key, key)
        path = (*frame.path, key)
        first = frame.explicit.get(key)
        if first is not None:
            self.problems.append(Problem(
                self.display, key_pos[0], key_pos[1], display_path(path),
                f"duplicate key '{key}' (first defined at line {first[0]})",
            ))
        frame.explicit[key] = key_pos
        if not frame.quiet:
            self.source.keys[path] = key_pos
            if pos is not None and not placed:
                self.source.values[path] = pos
        frame.container[key] = value

    def apply_merges(self, frame: _Frame) -> None:
        mapping = frame.container
        assert isinstance(mapping, dict)
        for value, key_pos, _mark in frame.merges:
            sources = value if isinstance(value, list) else [value]
            for source in sources:
                if not isinstance(source, dict):
                    self.fail(_FakeMark(key_pos), "'<<' (merge key) needs a mapping or "
                                                  "a list of mappings")
                for k, v in source.items():
                    if k not in mapping:  # explicit keys and earlier merges win
                        mapping[k] = v
                        if not frame.quiet:
                            self.source.keys[(*frame.path, k)] = key_pos
                            self.source.values[(*frame.path, k)] = key_pos


def _holds_case_rows(path: YamlPath) -> bool:
    """`cases` of the file or of one of its conversations (an inline list of rows)."""
    return path == ("cases",) or (
        len(path) == 3 and path[0] == "conversations" and path[2] == "cases"
    )


class _Merge:
    def __repr__(self) -> str:
        return "<<"


_MERGE = _Merge()


class _FakeMark:
    """A mark-like object for positions we already hold 1-based."""

    def __init__(self, pos: Position) -> None:
        self.line, self.column = pos[0] - 1, pos[1] - 1


def _short_tag(tag: str | None) -> str:
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix):] if tag and tag.startswith(prefix) else str(tag)


def json_type(value: Any, *, article: bool = False) -> str:
    """A loaded value's type as JSON Schema names it (object, array, string, number, boolean,
    null); with `article`, as said in a sentence: "an object", "a string", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        name = "boolean"
    elif isinstance(value, (int, float)):
        name = "number"
    elif isinstance(value, str):
        name = "string"
    elif isinstance(value, list):
        name = "array"
    elif isinstance(value, dict):
        name = "object"
    else:
        name = type(value).__name__
    return (("an " if name[0] in "aeiou" else "a ") + name) if article else name


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
