"""An httpx transport that bounds how large a reply body may grow once decoded.

httpx decodes gzip / deflate above the transport and keeps whatever it decodes, so a small
gzip reply that expands to gigabytes would be read into memory whole. This transport decodes
those encodings itself, in bounded steps, and raises `ReplyTooLargeError` as soon as the
decoded body passes its bound; httpx then sees a plain body. It asks servers for gzip or
deflate only, and refuses any other encoding.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Iterator
from typing import cast

import httpx

from glmrun import errors

ACCEPT_ENCODING = "gzip, deflate"
STEP = 1 << 20  # bytes decoded at a time: memory per step stays small whatever the ratio


class BoundedTransport(httpx.BaseTransport):
    """Wraps a transport; `limit_for(request)` is the decoded-size bound of its reply."""

    def __init__(self, inner: httpx.BaseTransport, *, limit: int, file_limit: int) -> None:
        self._inner = inner
        self.limit = limit
        self.file_limit = file_limit

    def limit_for(self, request: httpx.Request) -> int:
        # a batch's output file is the one reply that may legitimately be large
        path = request.url.path
        return self.file_limit if "/files/" in path and path.endswith("/content") else self.limit

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = ACCEPT_ENCODING
        response = self._inner.handle_request(request)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
            response.close()
            raise errors.BadReplyError(
                f"the reply is encoded as {encoding!r}, which glmrun did not ask for")
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-encoding", "content-length")]
        stream = _BoundedStream(response, encoding, self.limit_for(request))
        return httpx.Response(
            response.status_code, headers=headers, stream=stream,
            extensions=response.extensions, request=request,
        )

    def close(self) -> None:
        self._inner.close()


class _BoundedStream(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response, encoding: str, limit: int) -> None:
        self._response = response
        self._encoding = encoding
        self._limit = limit

    def __iter__(self) -> Iterator[bytes]:
        size = 0
        decoder = _Decoder(self._encoding)
        raw_stream = cast(Iterable[bytes], self._response.stream)  # a sync client's
        for raw in itertools.chain(raw_stream, (None,)):
            for piece in decoder.feed(raw) if raw is not None else decoder.finish():
                size += len(piece)
                if size > self._limit:
                    raise errors.ReplyTooLargeError(
                        f"the reply body passed {self._limit:,} bytes"
                        + (f" once decoded ({self._encoding})" if decoder.zlib else "")
                        + "; glmrun stopped reading it")
                yield piece

    def close(self) -> None:
        self._response.close()


class _Decoder:
    """gzip / deflate in steps of at most STEP bytes out; identity passes through."""

    def __init__(self, encoding: str) -> None:
        self.zlib = encoding in ("gzip", "x-gzip", "deflate")
        # gzip: a gzip header (or a zlib one); deflate: zlib-wrapped, else raw, as httpx does
        self._wbits = zlib.MAX_WBITS | 32 if encoding != "deflate" else zlib.MAX_WBITS
        self._d = zlib.decompressobj(self._wbits) if self.zlib else None
        self._first = True

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._d is None:
            if data:
                yield data
            return
        while True:
            try:
                out = self._d.decompress(data, STEP)
            except zlib.error as exc:
                if self._first and self._wbits == zlib.MAX_WBITS:  # raw deflate, no header
                    self._wbits = -zlib.MAX_WBITS
                    self._d = zlib.decompressobj(self._wbits)
                    self._first = False
                    continue
                raise errors.BadReplyError(f"the reply body could not be decoded: {exc}") \
                    from None
            self._first = False
            data = self._d.unconsumed_tail
            if not out and not data:  # all input taken, nothing pending
                break
            if out:
                yield out

    def finish(self) -> Iterator[bytes]:
        if self._d is not None and (rest := self._d.flush()):
            yield rest
