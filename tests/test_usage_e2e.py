"""Issue 12, usage in full: cached and reasoning tokens per call, per conversation and per run
(transcript, Markdown, summary), which tokens `max_tokens` counts, and costs from the price
table (overridable with --prices; the Batch API at half price). CLI → real SDK → emulator.

The emulator reports cached tokens for models with context caching (everything up to the last
assistant message was sent before: prompt characters // 2) and reasoning tokens = characters
of reasoning_content.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.e2e.harness import run, transcripts, write

from glmrun.mock import MockServer
from glmrun.models import Price
from glmrun.types import Usage

SUITE = """
    model: glm-4.7
    params:
      thinking: {type: enabled}
      tools:
        - type: function
          function: {name: f, parameters: {type: object}}
          respond: {result: 好}
    messages:
      - {role: user, content: '问题 [[tool:f {}]]'}
    expect:
      - {max_tokens: 30, count: reply}
      - {max_tokens: 12, count: reasoning}
      - {max_tokens: 30}
"""
PRICES = "glm-4.7: {input: 2, output: 8, cached: 0.5}\n"


@pytest.mark.parametrize("sdk", ["zhipuai", "zai"])
@pytest.mark.parametrize("mode", ["sync", "stream"])
@pytest.mark.slow
def test_cached_and_reasoning_tokens_are_recorded_summed_and_priced(
    api: MockServer, tmp_path: Path, mode: str, sdk: str
) -> None:
    out = tmp_path / "out"
    prices = write(tmp_path, "prices.yaml", PRICES)
    result = run(api, write(tmp_path, "u.yaml", SUITE), out, "--mode", mode,
                 "--prices", prices, "--sdk", sdk)
    t = transcripts(out)["u"]
    # call 1: the user message has 16 characters (markers included) → prompt 16 // 2 + 1 = 9,
    # nothing cached; reasoning "Thinking about: 问题" (18) + the call "f" + "{}" → 21.
    # call 2: + assistant "" + tool "好" → prompt 17 // 2 + 1 = 9, cached (up to the assistant
    # message) 16 // 2 = 8; reasoning 18 + "Tool results: 好" (15) → completion 33.
    assert [c["usage"] for c in t["calls"]] == [
        {"prompt_tokens": 9, "completion_tokens": 21, "total_tokens": 30,
         "cached_tokens": 0, "reasoning_tokens": 18},
        {"prompt_tokens": 9, "completion_tokens": 33, "total_tokens": 42,
         "cached_tokens": 8, "reasoning_tokens": 18},
    ]
    assert t["usage"] == {"prompt_tokens": 18, "completion_tokens": 54, "total_tokens": 72,
                          "cached_tokens": 8, "reasoning_tokens": 36}
    # reply tokens: 54 - 36 = 18 ≤ 30; reasoning 36 > 12; completion 54 > 30
    assert [(e["passed"], e["reason"]) for e in t["expectations"]] == [
        (True, "18 reply tokens (limit 30)"),
        (False, "36 reasoning tokens exceed the limit of 12"),
        (False, "54 completion tokens exceed the limit of 30"),
    ]
    assert result.exit_code == 1, result.output
    # (9·2 + 21·8) / 1e6 and (1·2 + 8·0.5 + 33·8) / 1e6
    assert [c["cost"] for c in t["calls"]] == [pytest.approx(186e-6), pytest.approx(270e-6)]
    assert t["cost"] == pytest.approx(456e-6)
    md = (out / "u.md").read_text("utf-8")
    assert "| Tokens | 72 (18 prompt (8 cached) + 54 completion (36 reasoning)) |" in md
    assert "| Cost | ¥0.000456 |" in md
    assert "| 2 | 0 | 1 | stop | 9 + 33 = 42 (8 cached, 18 reasoning) |" in md
    assert "tokens: 72 (8 cached, 36 reasoning)   cost: ¥0.000456   wall time:" in result.output


def test_the_batch_api_is_priced_at_half(api: MockServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prices = write(tmp_path, "prices.yaml", "glm-4-plus: {input: 5, output: 5}\n")
    path = write(tmp_path, "b.yaml", """
        model: glm-4-plus
        messages: [{role: user, content: 你好}]
    """)
    sync = run(api, path, out / "sync", "--prices", prices)
    batch = run(api, path, out / "batch", "--prices", prices, "--mode", "batch",
                "--batch-poll", "0.01")
    assert sync.exit_code == batch.exit_code == 0, sync.output + batch.output
    full, half = transcripts(out / "sync")["b"], transcripts(out / "batch")["b"]
    assert full["usage"] == half["usage"]
    assert full["cost"] == pytest.approx(full["usage"]["total_tokens"] * 5e-6)
    assert half["cost"] == pytest.approx(full["cost"] / 2)


def test_a_model_without_a_price_has_no_cost(api: MockServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = write(tmp_path, "n.yaml", """
        model: glm-4-air
        messages: [{role: user, content: 你好}]
    """)
    result = run(api, path, out)
    assert result.exit_code == 0, result.output
    t = transcripts(out)["n"]
    assert t["cost"] is None and t["calls"][0]["cost"] is None
    assert "cost:" not in result.output


def test_cached_tokens_are_priced_as_zhipu_prices_them() -> None:
    price = Price(input=2.0, output=8.0, cached=0.5)
    usage = Usage(prompt_tokens=1000, completion_tokens=100, total_tokens=1100,
                  cached_tokens=600, reasoning_tokens=40)
    # 400 uncached input + 600 cache hits + 100 output (reasoning is output)
    assert price.cost(usage) == pytest.approx((400 * 2 + 600 * 0.5 + 100 * 8) / 1e6)
    assert price.cost(usage, batch=True) == pytest.approx(price.cost(usage) / 2)
    assert Price(2.0, 8.0).cost(usage) == pytest.approx((1000 * 2 + 100 * 8) / 1e6)
