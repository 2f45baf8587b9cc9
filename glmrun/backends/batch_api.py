"""The batch half of the backend seam: upload a JSONL file, run it as a batch, download results.

`zhipu.ZhipuBackend` implements `BatchApi` over the SDK's files/batches resources; `glmrun.batch`
drives it. Like `base.Backend`, everything here speaks glmrun's types and raises glmrun's errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from glmrun.types import Reply

# Zhipu's endpoint for chat lines, both in each JSONL line's `url` and in batches.create.
BATCH_ENDPOINT = "/v4/chat/completions"
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class BatchInfo:
    """What `batches.retrieve` says about one batch, in glmrun's terms."""

    id: str
    status: str  # validating | in_progress | finalizing | completed | failed | expired | ...
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    created_at: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    errors: tuple[str, ...] = ()  # why a batch failed (validation errors), as readable lines

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@runtime_checkable
class BatchApi(Protocol):
    """What batch mode needs from a provider."""

    base_url: str

    def upload_batch_file(self, path: Path) -> str:
        """Upload a JSONL file with purpose 'batch'; return its file id."""
        ...

    def create_batch(self, file_id: str, metadata: Mapping[str, str]) -> BatchInfo: ...

    def get_batch(self, batch_id: str) -> BatchInfo: ...

    def cancel_batch(self, batch_id: str) -> BatchInfo: ...

    def download_file(self, file_id: str) -> bytes: ...

    def reply_from_body(self, body: Mapping[str, Any], *, latency_ms: float) -> Reply:
        """The Reply for a completion JSON body (an output line's `response.body`).

        Raises like a sync call would (e.g. ContentFilterError for finish_reason 'sensitive').
        """
        ...

    def close(self) -> None: ...
