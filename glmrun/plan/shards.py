"""Sharding a run over CI jobs (`--shard K/N`).

A run belongs to shard `sha256(group id) mod N`: the same suite gives every job the same
split, wherever and in whatever order it is planned, and the repeats of a conversation and
case (which `pass_rate` judges together) always land in one shard. `glmrun merge`
(output/merge.py) joins the jobs' folders.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from glmrun import errors

if TYPE_CHECKING:
    from glmrun.plan.plans import RunPlan

SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based, as typed) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        """Whether the run (or repeat group) with this key is in this shard."""
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1


def parse_shard(text: str) -> Shard:
    """'K/N' with 1 <= K <= N."""
    match = SHARD.fullmatch(text)
    if not match:
        raise errors.InputError(f"--shard '{text}' is not of the form K/N (say 2/4)")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
        raise errors.InputError(f"--shard '{text}': K must be between 1 and N")
    return Shard(index, count)


def select(plans: Sequence[RunPlan], shard: Shard | None) -> list[RunPlan]:
    """The plans of this shard, in their order (all of them without a shard)."""
    if shard is None:
        return list(plans)
    return [p for p in plans if shard.holds(p.group_id or p.id)]
