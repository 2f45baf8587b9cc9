"""What `glmrun --estimate` prints: each run's prompt tokens and their cost, and the total."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EstimateRow:
    """One run's first request, counted by Zhipu's tokenizer (nothing sent to the model)."""

    id: str
    model: str
    prompt_tokens: int
    cost: float | None  # CNY, the prompt at the model's input price; None: no price


def render_estimate(rows: Sequence[EstimateRow]) -> list[str]:
    """The table and the total line, ids and models aligned."""
    width_id = max([len(r.id) for r in rows] + [3])
    width_model = max([len(r.model) for r in rows] + [5])
    lines = [f"{'run':<{width_id}}  {'model':<{width_model}}  {'prompt tokens':>13}  cost"]
    for r in rows:
        lines.append(f"{r.id:<{width_id}}  {r.model:<{width_model}}  {r.prompt_tokens:>13,}  "
                     f"{_money(r.cost)}")
    total = sum(r.prompt_tokens for r in rows)
    priced = [r.cost for r in rows if r.cost is not None]
    unpriced = len(rows) - len(priced)
    cost = f"¥{_amount(sum(priced))}" if priced else "no price"
    lines.append(
        f"total: {len(rows)} run{'s' if len(rows) != 1 else ''}, {total:,} prompt tokens, "
        f"prompt cost {cost}" + (f" ({unpriced} without a price)" if priced and unpriced
                                 else ""))
    lines.append("(the first request of each run, counted by Zhipu's tokenizer; replies, "
                 "later turns and tool rounds are not included; nothing was sent to the model)")
    return lines


def _money(cost: float | None) -> str:
    return "-" if cost is None else f"¥{_amount(cost)}"


def _amount(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"
