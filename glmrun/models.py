"""The GLM models glmrun knows: capabilities, context window and price, in one table.

The emulator answers by it (thinking by default, vision, context caching), validation hints
name its models ("did you mean glm-4.7?"), and run costs come from its prices. A model that
is not in the table still runs: glmrun passes it through and reports no cost for it. The
table lists the model codes Zhipu documents, current and older (glm-4, glm-z1-*, ...), so a
hint never names a near neighbour of a real model.

Prices are CNY per million tokens on Zhipu's China platform (open.bigmodel.cn, glmrun's
default endpoint); each priced entry cites its page (PRICING: the price page
https://docs.bigmodel.cn/cn/guide/start/pricing, GLM4_PAGE: the GLM-4 model page), as read on
2026-12-01. Models whose price those pages did not show have `price=None` (many of today's
models are billed by tiers of input length there, which one price per model cannot say).
`--prices FILE` overrides or adds prices (see `load_prices`).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from glmrun.types import Usage

Thinking = Literal["none", "hybrid", "default"]  # no thinking / off unless asked / on unless off

PRICING = "https://docs.bigmodel.cn/cn/guide/start/pricing (read 2026-12-01)"
GLM4_PAGE = "https://docs.bigmodel.cn/cn/guide/models/text/glm-4 (read 2026-12-01)"
BATCH_DISCOUNT = 0.5  # the Batch API bills half the price (Zhipu's batch documentation)


@dataclass(frozen=True)
class Price:
    """CNY per million tokens: prompt tokens not cached, cached prompt tokens, completion."""

    input: float
    output: float
    cached: float | None = None  # None: cached tokens are billed as input

    def cost(self, usage: Usage, *, batch: bool = False) -> float:
        """The price of one call's usage in CNY (the Batch API at its discount)."""
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_price = self.input if self.cached is None else self.cached
        total = ((usage.prompt_tokens - cached) * self.input + cached * cached_price
                 + usage.completion_tokens * self.output) / 1_000_000
        return total * BATCH_DISCOUNT if batch else total


@dataclass(frozen=True)
class Model:
    name: str
    thinking: Thinking = "none"
    vision: bool = False
    video: bool = False  # takes video_url parts (video understanding)
    context: int = 128_000
    caching: bool = False  # reports prompt_tokens_details.cached_tokens
    # takes images as base64 (local files, data: URLs); Zhipu's GLM-4V page: "GLM-4V-Flash
    # 不支持base64编码" (URLs only)
    base64_images: bool = True
    price: Price | None = None


FREE = Price(0.0, 0.0, 0.0)

MODELS: Mapping[str, Model] = {m.name: m for m in (
    Model("glm-4-flash", price=FREE),
    Model("glm-4-flash-250414"),
    Model("glm-4-flashx-250414"),
    Model("glm-4-air-250414"),
    Model("glm-4"),
    Model("glm-4-9b"),
    Model("glm-3-turbo"),
    Model("glm-4v", vision=True, context=8_000),
    Model("glm-4v-plus-0111", vision=True, context=16_000),
    Model("glm-z1-air", thinking="default", context=32_000),
    Model("glm-z1-airx", thinking="default", context=32_000),
    Model("glm-z1-flash", thinking="default", context=32_000),
    Model("glm-4.1v-thinking-flash", thinking="default", vision=True, context=64_000),
    Model("glm-4.1v-thinking-flashx", thinking="default", vision=True, context=64_000),
    Model("glm-4.5-x", thinking="hybrid", caching=True),
    Model("glm-4.5-airx", thinking="hybrid", caching=True),
    Model("codegeex-4"),
    Model("charglm-4", context=8_000),
    Model("glm-4-flashx"),
    Model("glm-4-air"),
    Model("glm-4-airx"),
    Model("glm-4-plus", price=Price(5.0, 5.0)),  # GLM4_PAGE: "5 元 / 百万 Tokens"
    Model("glm-4-long", context=1_000_000),
    Model("glm-4-0520"),
    Model("glm-4v-flash", vision=True, context=8_000, base64_images=False),
    Model("glm-4v-plus", vision=True, video=True, context=8_000),
    Model("glm-4.5", thinking="hybrid", caching=True),
    Model("glm-4.5-air", thinking="hybrid", caching=True),
    Model("glm-4.5-flash", thinking="hybrid", caching=True),
    Model("glm-4.5v", thinking="hybrid", vision=True, video=True, context=64_000, caching=True),
    Model("glm-4.6", thinking="hybrid", context=200_000, caching=True),
    Model("glm-4.6v", thinking="hybrid", vision=True, video=True, context=128_000, caching=True),
    Model("glm-4.7", thinking="default", context=200_000, caching=True),
    Model("glm-4.7-flash", thinking="default", context=200_000, caching=True, price=FREE),
    Model("glm-5", thinking="default", context=200_000, caching=True),
    Model("glm-5.1", thinking="default", context=200_000, caching=True),
    Model("glm-5.2", thinking="default", context=200_000, caching=True),
    Model("glm-5.3", thinking="default", context=1_000_000, caching=True,
          price=Price(8.0, 28.0, 2.0)),  # PRICING, 旗舰模型: 8 / 28, cache hit 2
    Model("glm-5.3-flash", thinking="default", vision=True, context=1_000_000, caching=True,
          # PRICING: list price 0.8 / 2.8, cache hit 0.23; its half-price offer (0.4 / 1.4 /
          # 0.115) ended 2026-09-09 24:00 UTC+8, "到期后自动恢复为刊例价"
          price=Price(0.8, 2.8, 0.23)),
    Model("glm-5v-turbo", thinking="default", vision=True, video=True, context=200_000,
          caching=True),
)}


def find(name: str) -> Model | None:
    """The table's model of that name (case-insensitive, as the API treats model codes)."""
    return MODELS.get(name.lower())


def did_you_mean(name: str) -> str | None:
    """The closest known model name, for a hint on an unknown one."""
    close = difflib.get_close_matches(name.lower(), list(MODELS), n=1, cutoff=0.6)
    return close[0] if close else None


def load_prices(path: Path) -> dict[str, Price]:
    """A price file: JSON or YAML, `{model: {input, output, cached}}` in CNY per million tokens.

    Raises ValueError naming the problem.
    """
    import yaml

    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the price file {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of model names to prices")
    prices: dict[str, Price] = {}
    for model, entry in data.items():
        if not isinstance(entry, Mapping) or set(entry) - {"input", "output", "cached"} or not (
            {"input", "output"} <= set(entry)
        ):
            raise ValueError(f"{path}: {model}: expected {{input, output, cached?}}, got "
                             f"{json.dumps(entry, ensure_ascii=False, default=str)}")
        try:
            values = {k: float(v) for k, v in entry.items() if v is not None}
        except (TypeError, ValueError):
            raise ValueError(f"{path}: {model}: prices must be numbers") from None
        if any(v < 0 for v in values.values()):
            raise ValueError(f"{path}: {model}: prices must not be negative")
        prices[str(model).lower()] = Price(values["input"], values["output"],
                                           values.get("cached"))
    return prices


class PriceTable:
    """The table's prices, overridden by a price file's."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._overrides = dict(overrides or {})

    def price(self, model: str) -> Price | None:
        key = model.lower()
        if key in self._overrides:
            return self._overrides[key]
        known = MODELS.get(key)
        return known.price if known else None

    def cost(self, model: str, usage: Usage | None, *, batch: bool = False) -> float | None:
        """A call's cost in CNY, or None when the model has no price (or no usage came)."""
        price = self.price(model)
        if price is None or usage is None:
            return None
        return price.cost(usage, batch=batch)
