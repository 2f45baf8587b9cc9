"""Local images in message parts → inline `data:` URLs (Zhipu's vision models take base64)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glmrun.errors import MediaError, OutsideSuiteError
from glmrun.plan import sendrules
from glmrun.safety.suitefiles import inside_suite

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Zhipu's limit per image
_REMOTE = ("http://", "https://", "data:")
_cache: dict[tuple[Path, int, int], str] = {}


def image_type(head: bytes) -> str | None:
    """The MIME type from an image's first bytes (png, jpeg, gif, webp), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def is_local(url: str) -> bool:
    """True when the URL is a path to a local file (not http(s) nor data:)."""
    return not url.lower().startswith(_REMOTE)


def inline_image(url: str, *, root: Path) -> str:
    """The URL unchanged if remote, else the file (relative to `root`) as a base64 data: URL."""
    if not is_local(url):
        return url
    try:
        path = inside_suite(root, url, "image")
    except OutsideSuiteError as exc:
        raise MediaError(str(exc)) from None
    try:
        stat = path.stat()
    except OSError:
        raise MediaError(f"image '{url}' not found") from None
    if not path.is_file():
        raise MediaError(f"image '{url}' is not a file")
    if stat.st_size > MAX_IMAGE_BYTES:
        raise MediaError(f"image '{url}' is larger than 5 MB ({stat.st_size} bytes)")
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _cache:
        data = path.read_bytes()
        mime = image_type(data[:16])
        if mime is None:
            raise MediaError(f"image '{url}' is not a PNG, JPEG, GIF or WebP image")
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return _cache[key]


def inline_parts(content: Any, *, root: Path) -> Any:
    """Message content as sent: local image parts inlined, inline data as bare base64
    (strings pass through unchanged).

    A MediaError's `path` says which part failed: (index, "image_url", "url").
    """
    if isinstance(content, str):
        return content
    out: list[Any] = []
    for i, part in enumerate(content):
        if isinstance(part, Mapping) and part.get("type") == "image_url":
            image = dict(part["image_url"])
            try:  # as sent: Zhipu takes inline images as bare base64 (glmrun.plan.sendrules)
                image["url"] = _sent(inline_image(image["url"], root=root))
            except MediaError as exc:
                raise MediaError(exc.reason, (i, "image_url", "url")) from None
            part = {**part, "image_url": image}
        out.append(part)
    return out


_sent_cache: dict[str, str] = {}


def _sent(url: str) -> str:
    """The URL as sent, one object per image however many rows name it (plans keep it)."""
    sent = _sent_cache.get(url)
    if sent is None:
        if len(_sent_cache) > 256:
            _sent_cache.clear()
        sent = _sent_cache[url] = sendrules.image_url(url)
    return sent
