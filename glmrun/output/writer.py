"""Writing transcripts: `<id>.json` and `<id>.md`, atomically, redacted, on one background thread.

`write_transcript` never leaves a half-written file: each file is written to a temporary
sibling and renamed, and the JSON file (the one `--resume` looks at) last.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glmrun.output.markdown import render_markdown
from glmrun.safety.atomic import redacted_json, write_atomically
from glmrun.safety.redaction import Redactor

_NOT_A_FILE_NAME = re.compile(r'[/\\<>:"|?*\x00-\x1f]')


class TranscriptWriter:
    """Writes transcripts on one background thread, in order, behind a bounded queue.

    Worker threads hand a finished conversation over and go on; the single writer keeps file
    creation (slow on some disks, and contended when fifty threads do it at once) off their
    path. After a write fails (disk full, ...), `submit()` answers False so the run stops
    starting conversations; `close()` drains the queue and returns the first OSError (any
    other exception is a bug and is raised).
    """

    _STOP: Any = object()

    def __init__(
        self, out_dir: Path, formats: Sequence[str], *, secrets: Sequence[str] | Redactor = (),
        queue_size: int = 256,
    ) -> None:
        self.formats = _checked(formats)
        self._redactor = Redactor.of(secrets)
        self._folder = os.fspath(out_dir)
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="glmrun-writer", daemon=True)
        self._thread.start()

    def submit(self, data: Mapping[str, Any]) -> bool:
        """Queue a transcript; False (and nothing queued) once a write has failed."""
        if self._error is not None:
            return False
        self._queue.put(data)
        return True

    def close(self) -> OSError | None:
        """Write what is queued and stop; the first write error, if any (a bug is raised)."""
        self._queue.put(self._STOP)
        self._thread.join()
        error = self._error
        if error is None or isinstance(error, OSError):
            return error
        raise error

    def _loop(self) -> None:
        while (item := self._queue.get()) is not self._STOP:
            try:  # after a failure, each transcript already queued still gets its try
                _write(item, self._folder, self.formats, self._redactor, False)
            except BaseException as exc:  # reported by submit() / close()
                self._error = self._error or exc


def write_transcript(
    data: Mapping[str, Any],
    out_dir: Path,
    formats: Sequence[str] = ("json", "md"),
    *,
    secrets: Sequence[str] | Redactor = (),
    durable: bool = False,
) -> list[Path]:
    """Write `<out_dir>/<id>.json` and/or `<id>.md` atomically; return the paths in `formats` order.

    Every secret (see glmrun.safety.redaction) is replaced by *** in both files. The JSON file is
    written last, so its presence means the Markdown one is complete too.
    """
    formats = _checked(formats)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    redactor = Redactor.of(secrets)
    run_id = _write(data, os.fspath(out_dir), formats, redactor, durable)
    return [out_dir / f"{run_id}.{fmt}" for fmt in dict.fromkeys(formats)]


def _check_id(run_id: object) -> str:
    if (
        not isinstance(run_id, str)
        or not run_id
        or run_id.startswith(".")
        or _NOT_A_FILE_NAME.search(run_id)
    ):
        raise ValueError(f"transcript id {run_id!r} cannot be a file name")
    return run_id


def _checked(formats: Sequence[str]) -> tuple[str, ...]:
    unknown = set(formats) - {"json", "md"}
    if unknown:
        raise ValueError(f"unknown transcript format(s): {', '.join(sorted(unknown))}")
    return tuple(formats)


def _write(
    data: Mapping[str, Any], out_dir: str, formats: Sequence[str], redactor: Redactor,
    durable: bool,
) -> str:
    """write_transcript's work, on plain strings (see atomic.write_atomically for why).

    Returns the transcript's id (its file stem).
    """
    run_id = _check_id(data.get("id"))
    clean, encoded = redacted_json(data, redactor)
    payloads: dict[str, bytes] = {}  # all rendered before any is written: no orphan .md
    if "md" in formats:
        # the values are clean; what Markdown adds around them is redacted by the long forms
        # only, so a short test key cannot rewrite the document's own words
        payloads["md"] = redactor.long.text(render_markdown(clean)).encode("utf-8", "replace")
    if "json" in formats:
        payloads["json"] = encoded
    for fmt, payload in payloads.items():  # JSON last
        target = os.path.join(out_dir, f"{run_id}.{fmt}")
        try:
            write_atomically(target, [payload], durable=durable)
        except FileNotFoundError:  # the folder went away mid-run: make it again, once
            os.makedirs(out_dir, exist_ok=True)
            write_atomically(target, [payload], durable=durable)
    return run_id
