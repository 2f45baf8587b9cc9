"""Conversation files → validated, typed specs (with source positions for every error).

The dataclasses below are the contract between loading (this module, `templating`, `plan`)
and running (`runner`). Loading: `load_file(path) -> SuiteSpec` raises `SpecError` with every
problem at once; `discover(paths)` expands folders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Located:
    """Where a value came from: for errors that name file:line:column."""

    file: str
    line: int | None = None
    column: int | None = None


@dataclass(frozen=True)
class TurnSpec:
    """A further user turn: its (untemplated) content and the expectations on the reply."""

    content: str | tuple[Mapping[str, Any], ...]
    expect: tuple[Mapping[str, Any], ...] = ()
    at: Located | None = None


@dataclass(frozen=True)
class ConversationSpec:
    """One conversation, with file-level settings already merged in (nothing templated yet)."""

    name: str
    file: Path  # absolute path of the conversation file
    file_sha256: str
    model: str
    mode: str  # one of glmrun.types.MODES
    description: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # may hold params.tools with `respond`
    vars: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[Mapping[str, Any], ...] = ()  # raw message mappings (role, content, ...)
    turns: tuple[TurnSpec, ...] = ()
    cases: tuple[Mapping[str, Any], ...] = ()  # resolved rows (inline or from a data file)
    expect: tuple[Mapping[str, Any], ...] = ()  # on the final reply of the conversation
    base_url: str | None = None
    repeat: int = 1
    pass_rate: float = 1.0
    max_tool_rounds: int = 8
    tags: tuple[str, ...] = ()
    at: Located | None = None


@dataclass(frozen=True)
class SuiteSpec:
    """Everything one file declares."""

    file: Path
    sha256: str
    conversations: tuple[ConversationSpec, ...]
