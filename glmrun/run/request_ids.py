"""A fresh `request_id` for every request a run sends.

Zhipu's chat API reference (docs.bigmodel.cn, 对话补全, `request_id`): "由用户端传递，需要唯一；
用于区分每次请求的唯一标识符。如果用户端未提供，平台将默认生成" — the client's id must be
unique per request, and the platform makes one when none is sent. A file's `request_id` is one
value for the whole run, so sending it again on a retry, a later turn or a tool round would
reuse it (the API refuses a used id). glmrun sends it as written on the run's first request
only; call N (1-based) of the run sends `ID-N`, and its retry R sends `ID-N-rR`: unique within
the run, the same ids on every run of the file (so recordings still match, retries aside).
A file that gives no `request_id` sends none, every attempt: the platform makes a fresh one.
The same reference allows 6 to 64 characters ("ID长度要求：最少6个字符，最多64个字符"): a
suffix that would pass 64 shortens the file's part instead.
"""

from __future__ import annotations

import dataclasses

from glmrun.types import ChatRequest

MAX_REQUEST_ID = 64


def request_id_for(given: str, call: int, attempt: int) -> str:
    """The id sent by attempt `attempt` (0: the first) of the run's call `call` (0-based)."""
    if call == 0 and attempt == 0:
        return given
    suffix = f"-{call + 1}" + (f"-r{attempt}" if attempt else "")
    return given[:MAX_REQUEST_ID - len(suffix)] + suffix


def for_attempt(request: ChatRequest, call: int, attempt: int) -> ChatRequest:
    """The request as that attempt sends it: its request_id made fresh, if it has one."""
    given = request.params.get("request_id")
    if not isinstance(given, str) or not given:
        return request
    fresh = request_id_for(given, call, attempt)
    if fresh == given:
        return request
    return dataclasses.replace(request, params={**request.params, "request_id": fresh})
