"""Atomic file writes: a file either keeps its old content or has all the new, never half.

Transcripts, the reply store and batch state all go through here, so a crash, Ctrl-C or
kill -9 never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import Any


@cache
def _umask() -> int:
    # os.umask() can only be read by setting it, which races with other threads creating files.
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def write_atomically(path: Path, chunks: Iterable[bytes]) -> None:
    """Write `path` so that it either keeps its old content or has all of `chunks`, never half.

    The temporary file is a hidden sibling (`.<name>.<random>.tmp`), removed on any failure.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    if sys.platform != "win32":  # make the rename itself durable
        with suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def write_json_atomically(path: Path, data: Any, *, indent: int = 1) -> None:
    """Write `data` as UTF-8 JSON to `path` atomically, creating the folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, ensure_ascii=False, indent=indent) + "\n"
    write_atomically(path, [text.encode("utf-8")])
