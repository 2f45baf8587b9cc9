"""Zhipu's value rules, applied by glmrun before any request leaves, so what is recorded is
what is sent and every call mode sends the same body for the same file.

The SDKs rewrite some values inside `chat.completions.create` (zhipuai 2.1.5 in sync, stream
and async; zai-sdk 0.2.3 in sync and stream only), and Batch API lines, which glmrun writes
itself, would go out unrewritten. glmrun applies the same rules first, so each SDK's own pass
finds nothing left to change:

- `temperature` ≤ 0 → 0.01 with `do_sample: false` (greedy decoding); ≥ 1 → 0.99: the API
  takes the open interval (0, 1);
- `top_p` ≥ 1 → 0.99, ≤ 0 → 0.01: the open interval (0, 1) as well;
- an image part's `data:image/...;base64,` prefix is dropped: the API takes the bare base64.

(The SDKs also send `response_format: null` and `thinking: null` when they are unset, which
the API reads as absent.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def sampling(params: Mapping[str, Any]) -> dict[str, Any]:
    """`temperature` / `top_p` (and `do_sample`) as the SDKs send them."""
    out = dict(params)
    temperature = out.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        if temperature <= 0:
            out["temperature"], out["do_sample"] = 0.01, False
        elif temperature >= 1:
            out["temperature"] = 0.99
    top_p = out.get("top_p")
    if isinstance(top_p, (int, float)) and not isinstance(top_p, bool):
        if top_p >= 1:
            out["top_p"] = 0.99
        elif top_p <= 0:
            out["top_p"] = 0.01
    return out


def image_url(url: str) -> str:
    """An image URL as sent: inline data without its `data:image/...;base64,` prefix."""
    if url.startswith("data:image/"):
        return url.split("base64,")[-1]
    return url
