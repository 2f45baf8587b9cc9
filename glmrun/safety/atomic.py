"""Atomic file writes: a file either keeps its old content or has all the new, never half.

Transcripts, the reply store and batch state all go through here, so a crash, Ctrl-C or
kill -9 never leaves a half-written file behind.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from glmrun.safety import finite

if TYPE_CHECKING:
    from glmrun.safety.redaction import Redactor

_counter = itertools.count()

# 2-space indent and a final newline, as json.dumps(indent=2) + "\n" wrote them; a datetime or a
# dataclass is no JSON value: refused (the standard library's TypeError), not converted
_ORJSON_OPTIONS = (orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
                   | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)


def encode_json(data: Any) -> bytes:
    """A glmrun JSON file (transcripts, run.json, stores, state): UTF-8, indented by 2, keys in
    the order given, a final newline.

    orjson writes it (the standard library's indenting encoder is pure Python, and was most of
    a conversation's writing cost). What orjson refuses goes through `json`, which writes the
    same JSON: an integer beyond 64 bits, a key that is not a string, a lone surrogate (as a
    `\\udcxx` escape, valid JSON). A NaN or infinity that reached it (a server reply's number,
    say: input files refuse them) is written as null, as JSON.stringify does.
    """
    try:
        return orjson.dumps(data, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        text = json.dumps(finite.nulled(data), ensure_ascii=False, indent=2, allow_nan=False)
        # backslashreplace turns a lone surrogate into a \udcxx escape, which is valid JSON
        return (text + "\n").encode("utf-8", "backslashreplace")


def redacted_json(data: Any, redactor: Redactor | None) -> tuple[Any, bytes]:
    """`data` with every secret of `redactor` replaced, and its `encode_json`; the walk over the
    values is skipped (`data` itself is returned) when the encoded bytes show none can be there
    (Redactor.may_be_in)."""
    encoded = encode_json(data)
    if redactor is not None and redactor.may_be_in(encoded):
        clean = redactor.value(data)
        return clean, encode_json(clean)
    return data, encoded


def write_atomically(
    path: str | os.PathLike[str], chunks: Iterable[bytes], *, durable: bool = True
) -> None:
    """Write `path` so that it either keeps its old content or has all of `chunks`, never half.

    The data goes to a hidden sibling (`.<name>.<pid>-<n>.tmp`, removed on any failure) that is
    then renamed over `path`: a crash or kill -9 leaves the old file or the new one. `durable`
    also fsyncs the file and its folder, so the write survives an OS crash or power loss; that
    costs about a millisecond a file, which transcripts (thousands a run, re-run by --resume
    when lost) skip. Paths are handled as strings: pathlib interns every name it parses, and
    a run writing 20,000 files would grow the interpreter's table of interned strings.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{next(_counter)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)  # umask applies
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    if durable and sys.platform != "win32":  # make the rename itself durable
        with suppress(OSError):
            dir_fd = os.open(folder or ".", os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


_TEMP_NAME = re.compile(r"\..+\.(\d+)-\d+\.tmp")


def sweep_stale_temps(folder: str | os.PathLike[str]) -> int:
    """Remove the temp files that writers killed mid-write (kill -9, power loss) left in
    `folder`; return how many. A temp file of a process still alive (another run writing to
    the same folder) is left alone; so is everything that is not one of ours."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        m = _TEMP_NAME.fullmatch(entry.name)
        if m is None or _alive(int(m.group(1))):
            continue
        with suppress(OSError):
            os.unlink(entry.path)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid() or sys.platform == "win32":  # there, signal 0 is CTRL_C_EVENT
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # someone else's process, or we cannot tell: keep its file
    return True


def write_json_atomically(path: Path, data: Any, *, redactor: Redactor | None = None) -> None:
    """Write `data` as JSON (`encode_json`) to `path` atomically and durably, creating the
    folder if needed; redacted by `redactor` when one is given (`redacted_json`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, [redacted_json(data, redactor)[1]])


def check_writable(folder: Path, option: str, *, file: Path | None = None) -> None:
    """InputError unless `folder` exists or can be made, and a file can be created in it (so an
    output option fails before anything is sent, not after every request was)."""
    from glmrun import errors

    what = f"{option} {file if file is not None else folder}"
    try:
        if file is not None and file.is_dir():
            raise errors.InputError(f"{what}: is a folder, not a file")
        folder.mkdir(parents=True, exist_ok=True)
        probe = os.path.join(folder, f".glmrun-probe.{os.getpid()}-{next(_counter)}.tmp")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise errors.InputError(f"{what}: cannot write there: {exc.strerror or exc}") from None
