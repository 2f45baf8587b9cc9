"""A loopback emulator of Zhipu's v4 API, for end-to-end tests and `glmrun mock-server`.

    with MockServer(MockConfig(latency_s=0.05)) as server:
        client = ZhipuAI(api_key="test-key", base_url=server.base_url, max_retries=0)

Replies are deterministic (`behaviour.build_reply`); markers in the last user message
(`[[fault:500x2]]`, `[[tool:get_weather {"city": "北京"}]]`, `[[content_filter:2]]` ...,
read by `markers.py`) and the `inject()` / `script()` hooks drive faults and exact replies.
The emulator is written from Zhipu's documentation, not from glmrun's client: it shares only
the model table.

    server.py     MockServer: start, stop, test hooks     state.py   what one emulator holds
    http.py       the HTTP server, routes, SSE writing     stores.py  files, async tasks, batches
    requests.py   a request checked and its text read      markers.py markers and fault names
    behaviour.py  what a model replies                     wire.py    reply JSON and SSE chunks
    errors.py     Zhipu's error codes                      batches.py batch jobs
    multipart.py  uploads (the stdlib email parser)        bomb.py    a gzip bomb

May import: models.
"""

from __future__ import annotations

from .behaviour import GREETING_PROMPT, GREETING_REPLY
from .markers import FAULT_NAMES
from .server import MockServer, serve
from .state import MockConfig, MockStats, RecordedRequest

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
