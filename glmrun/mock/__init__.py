"""A loopback emulator of Zhipu's v4 API, for end-to-end tests and `glmrun mock-server`.

    with MockServer(MockConfig(latency_s=0.05)) as server:
        client = ZhipuAI(api_key="test-key", base_url=server.base_url, max_retries=0)

Replies are deterministic (see `behaviour.build_reply`); markers in the last user message
(`[[fault:500x2]]`, `[[tool:get_weather {"city": "北京"}]]`, `[[latency:250]]` ...) and the
`inject()` / `script()` hooks drive faults and exact replies. The emulator is written from
Zhipu's documentation, not from glmrun's client: it shares only the model table.

May import: models.
"""

from __future__ import annotations

from .behaviour import FAULT_NAMES, GREETING_PROMPT, GREETING_REPLY
from .server import MockConfig, MockServer, MockStats, RecordedRequest, serve

__all__ = [
    "FAULT_NAMES",
    "GREETING_PROMPT",
    "GREETING_REPLY",
    "MockConfig",
    "MockServer",
    "MockStats",
    "RecordedRequest",
    "serve",
]
