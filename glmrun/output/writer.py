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
from glmrun.output.transcript import encode_transcript
from glmrun.safety.atomic import write_atomically
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
        self._scan = _SecretScan(secrets)
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
                _write(item, self._folder, self.formats, self._scan, False)
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
    run_id = _write(data, os.fspath(out_dir), formats, _SecretScan(secrets), durable)
    return [out_dir / f"{run_id}.{fmt}" for fmt in dict.fromkeys(formats)]


class _SecretScan:
    """The run's redactor, and whether a transcript's encoded JSON can tell it holds no secret.

    A secret's characters survive JSON encoding (as UTF-8) unless it holds a quote, a backslash,
    a control character or a lone surrogate: then only the walk over the values can tell, and
    every transcript takes it. Otherwise a byte search for each form is enough to skip the walk:
    it finds every place the redactor would (and more, as it ignores a short form's word
    boundaries: those transcripts take the walk, which redacts exactly).
    """

    def __init__(self, secrets: Sequence[str] | Redactor) -> None:
        self.redactor = secrets if isinstance(secrets, Redactor) else Redactor(secrets)
        try:
            needles = tuple(f.encode("utf-8") for f in self.redactor.forms)
        except UnicodeEncodeError:
            needles = None
        self._needles = needles if self.redactor.json_safe else None

    def holds_secret(self, encoded: bytes) -> bool:
        """True when the transcript encoded as `encoded` must have its values redacted."""
        if not self.redactor:
            return False
        if self._needles is None:
            return True
        return any(needle in encoded for needle in self._needles)


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
    data: Mapping[str, Any], out_dir: str, formats: Sequence[str], scan: _SecretScan,
    durable: bool,
) -> str:
    """write_transcript's work, on plain strings (see atomic.write_atomically for why).

    Returns the transcript's id (its file stem).
    """
    run_id = _check_id(data.get("id"))
    encoded = encode_transcript(data)
    dirty = scan.holds_secret(encoded)
    redactor = scan.redactor
    clean = redactor.value(data) if dirty else data
    payloads: dict[str, bytes] = {}  # all rendered before any is written: no orphan .md
    if "md" in formats:
        # the values are clean; what Markdown adds around them is redacted by the long forms
        # only, so a short test key cannot rewrite the document's own words
        payloads["md"] = redactor.long.text(render_markdown(clean)).encode("utf-8", "replace")
    if "json" in formats:
        payloads["json"] = encode_transcript(clean) if dirty else encoded
    for fmt, payload in payloads.items():  # JSON last
        target = os.path.join(out_dir, f"{run_id}.{fmt}")
        try:
            write_atomically(target, [payload], durable=durable)
        except FileNotFoundError:  # the folder went away mid-run: make it again, once
            os.makedirs(out_dir, exist_ok=True)
            write_atomically(target, [payload], durable=durable)
    return run_id
