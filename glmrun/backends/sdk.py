"""What both SDK adapters share (zhipuai's `ZhipuAI`, zai-sdk's `ZhipuAiClient`/`ZaiClient`):
the two SDKs have one API shape (chat.completions, chat.asyncCompletions, files, batches) and one
exception tree, so this module turns ChatRequests into calls of whichever client an adapter
hands it, assembles streams, reads replies and maps the SDK's exceptions (by the classes the
adapter names) into glmrun's errors. It imports no SDK: `zhipu.py` and `zai.py` do.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from glmrun import errors
from glmrun.backends import codes
from glmrun.backends.base import DeltaSink, RequestIdentity, TaskTicket
from glmrun.backends.batch_api import BATCH_ENDPOINT, BatchInfo
from glmrun.backends.bounded import BoundedTransport
from glmrun.backends.cancel import cancellable_transport
from glmrun.types import ChatRequest, Delta, Reply, ToolCall, Usage

# Decoded size bounds: a chat reply or stream is far below 64 MiB (even 128k tokens of SSE);
# a batch output file is the one body that may be large.
MAX_REPLY_BYTES = 64 << 20
MAX_FILE_BYTES = 1 << 30

# Keywords chat.completions.create takes by name in both SDKs; anything else goes in
# extra_body (an adapter may name more: zai's create takes watermark_enabled).
SDK_PARAMS = frozenset({
    "request_id", "user_id", "do_sample", "temperature", "top_p", "max_tokens", "seed", "stop",
    "sensitive_word_check", "tools", "tool_choice", "meta", "response_format", "thinking",
})


@dataclass(frozen=True)
class SdkErrors:
    """An SDK's exception classes, by the role each plays (both SDKs have the same tree)."""

    base: type[BaseException]  # ZhipuAIError / ZaiError
    status: type[BaseException]  # APIStatusError: an HTTP error status
    connection: type[BaseException]  # APIConnectionError
    timeout: type[BaseException]  # APITimeoutError
    validation: type[BaseException]  # APIResponseValidationError
    response: type[BaseException]  # APIResponseError: an error event inside a 200 stream


@runtime_checkable
class TokenCounter(Protocol):
    """A backend that can count a request's prompt tokens without running the model."""

    def count_tokens(self, request: ChatRequest) -> int: ...


def http_client(timeout: httpx.Timeout, pool_size: int, max_reply_bytes: int,
                max_file_bytes: int) -> httpx.Client:
    """The pooled, bounded, cancellable HTTP client an SDK client is given."""
    limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
    return httpx.Client(
        timeout=timeout,
        transport=BoundedTransport(cancellable_transport(limits), limit=max_reply_bytes,
                                   file_limit=max_file_bytes),
    )


class SdkBackend:
    """Calls GLM through an SDK client (built by the adapter) over one pooled HTTP client."""

    def __init__(
        self,
        *,
        make_client: Callable[[httpx.Client, httpx.Timeout], Any],
        sdk_errors: SdkErrors,
        completion_type: Callable[..., Any],
        base_url: str,
        sdk_params: frozenset[str] = SDK_PARAMS,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 8.0,
        pool_size: int = 10,
        record_chunk_offsets: bool = False,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        max_file_bytes: int = MAX_FILE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url
        timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        self._http = http_client(timeout, pool_size, max_reply_bytes, max_file_bytes)
        self._client = make_client(self._http, timeout)
        self._errors = sdk_errors
        self._completion_type = completion_type
        self._sdk_params = sdk_params
        self._record_chunk_offsets = record_chunk_offsets
        self._clock = clock

    def close(self) -> None:
        self._http.close()

    def count_tokens(self, request: ChatRequest) -> int:
        """The prompt tokens of `request` by Zhipu's tokenizer: `POST {base}/tokenizer` with
        `{model, messages, tools}` (function tools only, as documented) answers
        `usage.prompt_tokens`; no model runs. Neither SDK has this resource, so it is called
        over the same HTTP client, with the SDK's own authentication headers."""
        body: dict[str, Any] = {"model": request.model,
                                "messages": [dict(m) for m in request.messages]}
        tools = [t for t in request.params.get("tools") or ()
                 if isinstance(t, Mapping) and t.get("type") == "function"]
        if tools:
            body["tools"] = tools
        with translate_errors(self._errors):
            response = self._http.post(f"{self.base_url.rstrip('/')}/tokenizer", json=body,
                                       headers=dict(self._client.auth_headers))
        if response.status_code >= 400:
            code, message = _error_body(response)
            raise codes.classify(response.status_code, code,
                                 message or f"HTTP {response.status_code}")
        try:
            tokens = response.json()["usage"]["prompt_tokens"]
        except (ValueError, KeyError, TypeError):
            raise errors.BadReplyError(
                f"the tokenizer answered without usage.prompt_tokens: {response.text[:200]!r}"
            ) from None
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise errors.BadReplyError(f"the tokenizer answered prompt_tokens={tokens!r}")
        return tokens

    def _kwargs(self, request: ChatRequest) -> dict[str, Any]:
        return _sdk_kwargs(request, self._sdk_params)

    # -- sync and stream ---------------------------------------------------------------

    def complete(
        self, request: ChatRequest, on_delta: DeltaSink | None = None, *,
        identity: RequestIdentity,
    ) -> Reply:
        started = self._clock()
        with translate_errors(self._errors):
            if request.mode == "stream":
                stream = self._client.chat.completions.create(
                    **self._kwargs(request), stream=True
                )
                try:
                    return self._assemble_stream(stream, started, on_delta)
                finally:  # on every path, or a stream that broke keeps its pool slot
                    stream.response.close()
            completion = self._client.chat.completions.create(**self._kwargs(request))
        return _reply_from_completion(completion, latency_ms=(self._clock() - started) * 1000)

    def _assemble_stream(
        self, stream: Any, started: float, on_delta: DeltaSink | None
    ) -> Reply:
        content: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish_reason: str | None = None
        usage: Usage | None = None
        ids: dict[str, str | None] = {"id": None, "model": None}
        blocks: dict[str, tuple[Mapping[str, Any], ...]] = {"web_search": (),
                                                            "content_filter": ()}
        ttft: float | None = None
        chunks = 0
        offsets: list[float] = []
        for chunk in _iterate(stream):
            now = (self._clock() - started) * 1000
            chunks += 1
            if self._record_chunk_offsets:
                offsets.append(round(now, 3))
            ids["id"] = ids["id"] or getattr(chunk, "id", None)
            ids["model"] = ids["model"] or getattr(chunk, "model", None)
            if getattr(chunk, "usage", None) is not None:
                usage = _usage(chunk.usage)
            blocks["web_search"] += _blocks(chunk, "web_search")
            blocks["content_filter"] += _blocks(chunk, "content_filter")
            for choice in chunk.choices or ():
                delta = choice.delta
                piece = getattr(delta, "content", None) or ""
                thought = getattr(delta, "reasoning_content", None) or ""
                if (piece or thought or getattr(delta, "tool_calls", None)) and ttft is None:
                    ttft = now
                if piece:
                    content.append(piece)
                if thought:
                    reasoning.append(thought)
                if on_delta is not None and (piece or thought):
                    on_delta(Delta(content=piece, reasoning_content=thought))
                for tc in getattr(delta, "tool_calls", None) or ():
                    slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                    slot["id"] = slot["id"] or tc.id
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        slot["arguments"] += tc.function.arguments or ""
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
        latency = (self._clock() - started) * 1000
        if finish_reason is None:
            raise errors.StreamError(
                f"stream ended after {chunks} chunks without a final chunk (no finish_reason)"
            )
        _raise_for_finish_reason(finish_reason)
        return Reply(
            content="".join(content),
            reasoning_content="".join(reasoning) or None,
            tool_calls=tuple(
                ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"])
                for i, c in sorted(calls.items())
            ),
            finish_reason=finish_reason,
            usage=usage,
            id=ids["id"],
            request_id=ids["id"],
            model=ids["model"],
            latency_ms=latency,
            ttft_ms=ttft,
            chunks=chunks,
            chunk_offsets_ms=tuple(offsets) if self._record_chunk_offsets else None,
            web_search=blocks["web_search"], content_filter=blocks["content_filter"],
        )

    # -- async tasks -------------------------------------------------------------------

    def submit(self, request: ChatRequest, *, identity: RequestIdentity) -> TaskTicket:
        with translate_errors(self._errors):
            status = self._client.chat.asyncCompletions.create(**self._kwargs(request))
        if not getattr(status, "id", None):
            raise errors.BadReplyError(f"async submit returned no task id: {status!r}")
        return TaskTicket(task_id=status.id, request_id=getattr(status, "request_id", None))

    def poll(self, ticket: TaskTicket) -> Reply | None:
        started = self._clock()
        with translate_errors(self._errors):
            result = self._client.chat.asyncCompletions.retrieve_completion_result(
                ticket.task_id
            )
        state = getattr(result, "task_status", None)
        if state == "PROCESSING":
            return None
        if state == "SUCCESS":
            reply = _reply_from_completion(
                result, latency_ms=(self._clock() - started) * 1000
            )
            return reply
        raise errors.TaskFailedError(
            f"async task {ticket.task_id} ended with task_status={state}",
            code=None,
        )

    # -- batch (see glmrun.backends.batch_api.BatchApi) ------------------------------------

    def upload_batch_file(self, path: Path) -> str:
        with translate_errors(self._errors), path.open("rb") as fh:
            uploaded = self._client.files.create(file=(path.name, fh), purpose="batch")
        return str(uploaded.id)

    def create_batch(self, file_id: str, metadata: Mapping[str, str]) -> BatchInfo:
        with translate_errors(self._errors):
            batch = self._client.batches.create(
                input_file_id=file_id, endpoint=BATCH_ENDPOINT, completion_window="24h",
                metadata=dict(metadata),
            )
        return _batch_info(batch)

    def get_batch(self, batch_id: str) -> BatchInfo:
        with translate_errors(self._errors):
            return _batch_info(self._client.batches.retrieve(batch_id))

    def cancel_batch(self, batch_id: str) -> BatchInfo:
        with translate_errors(self._errors):
            return _batch_info(self._client.batches.cancel(batch_id))

    def download_file(self, file_id: str) -> bytes:
        with translate_errors(self._errors):
            return bytes(self._client.files.content(file_id).content)

    def reply_from_body(self, body: Mapping[str, Any], *, latency_ms: float) -> Reply:
        try:
            completion = self._completion_type(**body)
        except Exception as exc:  # pydantic's ValidationError, whichever pydantic is installed
            raise errors.BadRequestError(f"unexpected completion in the batch output: {exc}") \
                from exc
        return _reply_from_completion(completion, latency_ms=latency_ms)


def _batch_info(batch: Any) -> BatchInfo:
    counts = getattr(batch, "request_counts", None)
    problems = getattr(getattr(batch, "errors", None), "data", None) or ()
    return BatchInfo(
        id=str(batch.id),
        status=str(batch.status),
        input_file_id=getattr(batch, "input_file_id", None),
        output_file_id=getattr(batch, "output_file_id", None),
        error_file_id=getattr(batch, "error_file_id", None),
        total=int(getattr(counts, "total", 0) or 0),
        completed=int(getattr(counts, "completed", 0) or 0),
        failed=int(getattr(counts, "failed", 0) or 0),
        created_at=getattr(batch, "created_at", None),
        metadata=dict(getattr(batch, "metadata", None) or {}),
        errors=tuple(
            (f"line {e.line}: " if e.line else "") + f"{e.message} (code {e.code})"
            for e in problems
        ),
    )


def _sdk_kwargs(request: ChatRequest, sdk_params: frozenset[str]) -> dict[str, Any]:
    """The keyword arguments for create(); a deep copy, since the SDK edits messages in place."""
    kwargs: dict[str, Any] = {
        "model": request.model,
        "messages": copy.deepcopy([dict(m) for m in request.messages]),
    }
    extra: dict[str, Any] = {}
    for key, value in request.params.items():
        if key == "stream":
            continue
        if key in sdk_params:
            kwargs[key] = copy.deepcopy(value)
        else:
            extra[key] = copy.deepcopy(value)
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def _iterate(stream: Any) -> Iterator[Any]:
    """The stream's chunks; a chunk the SDK cannot read as JSON is a server fault."""
    chunks = iter(stream)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except json.JSONDecodeError as exc:  # also an SSE `retry:` line: the SDK parses ''
            raise errors.BadReplyError(
                f"the stream sent an event that is not JSON: {exc.doc[:80]!r} ({exc.msg})"
            ) from exc
        yield chunk


def _part(obj: Any, name: str) -> Any:
    """A field of an SDK object, whether the SDK models it (zai) or keeps it as a dict
    (zhipuai keeps fields it does not know, such as the usage details, as plain dicts)."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _usage(u: Any) -> Usage:
    return Usage(
        prompt_tokens=int(_part(u, "prompt_tokens") or 0),
        completion_tokens=int(_part(u, "completion_tokens") or 0),
        total_tokens=int(_part(u, "total_tokens") or 0),
        cached_tokens=int(_part(_part(u, "prompt_tokens_details"), "cached_tokens") or 0),
        reasoning_tokens=int(
            _part(_part(u, "completion_tokens_details"), "reasoning_tokens") or 0),
    )


def _reply_from_completion(completion: Any, *, latency_ms: float) -> Reply:
    choices = getattr(completion, "choices", None) or []
    if not choices:
        raise errors.BadReplyError("the API answered with no choices")
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is None:  # never an empty reply: the server sent none
        raise errors.BadReplyError("the API answered with no message (message: null)")
    finish_reason = choice.finish_reason
    _raise_for_finish_reason(finish_reason)
    tool_calls = tuple(
        ToolCall(
            id=tc.id, name=tc.function.name, arguments=tc.function.arguments,
            type=getattr(tc, "type", None) or "function",
        )
        for tc in (getattr(message, "tool_calls", None) or ())
    )
    usage = getattr(completion, "usage", None)
    return Reply(
        web_search=_blocks(completion, "web_search"),
        content_filter=_blocks(completion, "content_filter"),
        content=getattr(message, "content", None),
        reasoning_content=getattr(message, "reasoning_content", None),
        tool_calls=tool_calls,
        finish_reason=finish_reason,
        usage=_usage(usage) if usage is not None else None,
        id=getattr(completion, "id", None),
        request_id=getattr(completion, "request_id", None),
        model=getattr(completion, "model", None),
        latency_ms=latency_ms,
    )


def _blocks(completion: Any, name: str) -> tuple[Mapping[str, Any], ...]:
    """A reply block the SDK may not model (zhipuai keeps it as plain dicts), as JSON."""
    items = _part(completion, name) or ()
    if not isinstance(items, (list, tuple)):
        return ()
    return tuple(
        dict(i) if isinstance(i, Mapping) else dict(getattr(i, "model_dump", dict)())
        for i in items
    )


def _raise_for_finish_reason(finish_reason: str | None) -> None:
    if finish_reason == "sensitive":
        raise errors.ContentFilterError(
            "the reply was stopped by Zhipu's content filter (finish_reason 'sensitive')",
            code="1301",
        )
    if finish_reason == "model_context_window_exceeded":
        raise errors.ContextWindowError(
            "the conversation no longer fits the model's context window "
            "(finish_reason 'model_context_window_exceeded')"
        )
    if finish_reason == "network_error":
        raise errors.StreamError(
            "the model's inference was interrupted (finish_reason 'network_error')"
        )


@contextlib.contextmanager
def translate_errors(sdk: SdkErrors) -> Iterator[None]:
    """Translate the SDK's and httpx's exceptions raised inside the block into glmrun's own."""
    try:
        yield
    except errors.GlmrunError:
        raise
    except Exception as exc:
        mapped = map_exception(exc, sdk)
        if mapped is None:
            raise
        raise mapped from exc


def map_exception(error: BaseException, sdk: SdkErrors) -> errors.ApiError | None:
    """glmrun's error for an SDK or transport exception, or None for anything else."""
    exc = error
    if isinstance(exc, json.JSONDecodeError):  # raised by the SDK on a 200 it cannot parse
        what = "an empty body" if not exc.doc.strip() else f"cut or invalid JSON ({exc.msg})"
        return errors.BadReplyError(f"the API answered HTTP 200 with {what}")
    if isinstance(exc, sdk.connection) and isinstance(exc.__cause__, errors.ApiError):
        return exc.__cause__  # the reply body broke a bound while it was read
    if isinstance(exc, sdk.timeout):
        return errors.RequestTimeoutError("the request timed out")
    if isinstance(exc, sdk.connection):
        return errors.NetworkError(f"could not connect: {exc.__cause__ or exc}")
    if isinstance(exc, sdk.status):
        response: httpx.Response = getattr(exc, "response")  # noqa: B009 (the SDK's class)
        code, message = _error_body(response)
        return codes.classify(
            response.status_code, code, message or f"HTTP {response.status_code}",
            retry_after=_retry_after(response.headers.get("retry-after")))
    if isinstance(exc, sdk.validation):
        return errors.BadRequestError(f"unexpected response from the API: {exc}")
    if isinstance(exc, sdk.response):  # an error event inside an HTTP 200 stream
        raw = getattr(exc, "json_data", None)
        data = raw if isinstance(raw, Mapping) else {}
        code = str(data["code"]) if data.get("code") is not None else None
        message = str(data.get("message") or getattr(exc, "message", "") or exc)
        if code in codes.ZHIPU_CODES:
            return codes.classify(None, code, message)
        return errors.StreamError(f"error event in the stream: {message}", code=code)
    if isinstance(exc, httpx.TimeoutException):
        return errors.RequestTimeoutError(f"the request timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.TransportError):
        return errors.StreamError(f"the connection broke mid-response: {exc or type(exc).__name__}")
    if isinstance(exc, sdk.base):
        return errors.ApiError(str(exc))
    return None


def _error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        text = response.text.strip()
        return None, text[:500] or None
    err = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(err, Mapping):
        return None, json.dumps(body, ensure_ascii=False)[:500]
    code = err.get("code")
    return (str(code) if code is not None else None), (str(err.get("message") or "") or None)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
