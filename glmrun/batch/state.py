"""What batch mode keeps between commands, under `<out>/.glmrun-batch/`: `state.json` (this
folder's batches, what each line holds, and the run that made them) and `replies/` (a
ReplyStore keyed by `request_key`, so a re-run answers known requests without a new batch).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from glmrun import __version__, errors
from glmrun.backends.batch_api import BatchInfo
from glmrun.backends.store import ReplyStore
from glmrun.safety.atomic import write_json_atomically
from glmrun.safety.baseurl import display
from glmrun.safety.redaction import Redactor, env_keys

STATE_DIR = ".glmrun-batch"
STATE_VERSION = 1
FAILED_ENDINGS = frozenset({"failed", "expired", "cancelled"})


def state_dir(out_dir: Path) -> Path:
    return out_dir / STATE_DIR


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class BatchState:
    """`<out>/.glmrun-batch/state.json`: this folder's batches and the run that made them.

    Each batch entry holds its id, base URL, model, last known status and counts, the input file
    kept until its results are collected, and `lines`: custom_id → [request key, occurrence].
    Saved atomically after every change; thread-safe.
    """

    def __init__(self, out_dir: Path, data: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.path = state_dir(out_dir) / "state.json"
        self._data = data
        self._lock = threading.RLock()
        self._index: dict[tuple[str, str, int], tuple[dict[str, Any], str]] | None = None
        self._index_failed: frozenset[str] = frozenset()
        self.redactor = Redactor(env_keys())  # what is saved; open_state sets the run's

    @classmethod
    def load(cls, out_dir: Path) -> BatchState:
        path = state_dir(out_dir) / "state.json"
        if not path.is_file():
            return cls(out_dir, {"state_version": STATE_VERSION, "run": None, "batches": []})
        try:
            with path.open(encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise errors.InputError(f"{path}: not a readable batch state file: {exc}") from exc
        if not isinstance(data, dict) or data.get("state_version") != STATE_VERSION:
            raise errors.InputError(f"{path}: unknown batch state version")
        return cls(out_dir, data)

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @property
    def run(self) -> Mapping[str, Any] | None:
        """The saved selection and output settings: {selection: {...}, formats: [...]}."""
        run: Mapping[str, Any] | None = self._data.get("run")
        return run

    def set_run(self, run: Mapping[str, Any] | None) -> None:
        with self._lock:
            if run is not None or self._data.get("run") is None:
                self._data["run"] = dict(run) if run is not None else None

    def batches(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(b) for b in self._data["batches"]]

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        with self._lock:
            for entry in self._data["batches"]:
                if entry["id"] == batch_id:
                    return dict(entry)
        return None

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._data["batches"].append(entry)
            self._index = None
            self.save()

    def update(self, info: BatchInfo, *, collected: bool | None = None) -> None:
        with self._lock:
            for entry in self._data["batches"]:
                if entry["id"] == info.id:
                    entry.update(
                        status=info.status, output_file_id=info.output_file_id,
                        error_file_id=info.error_file_id,
                        counts={"total": info.total, "completed": info.completed,
                                "failed": info.failed},
                        errors=list(info.errors), updated_at=now_iso(),
                    )
                    if collected is not None:
                        entry["collected"] = collected
            self._index = None
            self.save()

    def lookup(
        self, base_url: str, key: str, occurrence: int, report_failed: frozenset[str]
    ) -> tuple[dict[str, Any], str] | None:
        """The batch (and custom_id) that holds this request and may still answer it: one not
        collected yet, or an ended one whose failure is to be reported. Newest wins, and a live
        batch wins over a failed one."""
        with self._lock:
            if self._index is None or self._index_failed != report_failed:
                index: dict[tuple[str, str, int], tuple[dict[str, Any], str]] = {}
                for entry in self._data["batches"]:
                    failed = entry.get("status") in FAILED_ENDINGS
                    if failed and entry["id"] not in report_failed:
                        continue
                    if entry.get("collected") and not failed:
                        continue
                    for custom_id, (k, occ) in entry["lines"].items():
                        slot = (entry["base_url"], k, int(occ))
                        held = index.get(slot)
                        if held is None or not failed or held[0].get("status") in FAILED_ENDINGS:
                            index[slot] = (entry, custom_id)
                self._index, self._index_failed = index, report_failed
            found = self._index.get((base_url, key, occurrence))
            return (dict(found[0]), found[1]) if found else None

    def save(self) -> None:
        with self._lock:
            self._data["glmrun_version"] = __version__
            self._data["updated_at"] = now_iso()
            write_json_atomically(self.path, self._data, redactor=self.redactor)


def open_state(out_dir: Path, redactor: Redactor | None = None) -> tuple[BatchState, ReplyStore]:
    """out_dir's batch state and replies store; what they save goes through `redactor`
    (default: the keys found in the environment)."""
    state = BatchState.load(out_dir)
    if redactor is not None:
        state.redactor = redactor
    return state, ReplyStore(state_dir(out_dir) / "replies", state.redactor)


def run_state(
    selection: Mapping[str, Any] | None, formats: Sequence[str], base_url: str | None
) -> dict[str, Any] | None:
    """What state.json keeps of a run so that `glmrun batch fetch` can resume it."""
    if selection is None:
        return None
    return {"base_url": display(base_url) if base_url else None, "selection": dict(selection),
            "formats": list(formats)}
