"""Local images in message parts → inline `data:` URLs, and Zhipu's image rules checked on
every image glmrun holds (local files and data: URLs) before anything is sent.

Zhipu's vision API (docs.bigmodel.cn, GLM-4V 系列, `image_url.url`): "图片url或者base64编码。
图像大小上传限制为每张图像 5M以下，且像素不超过 6000*6000。支持jpg、png、jpeg格式。说明：
GLM-4V-Flash 不支持base64编码" — at most 5 MB and 6000 × 6000 pixels, JPEG or PNG, and
glm-4v-flash takes only URLs (`models.Model.base64_images`). http(s) URLs are the server's to
fetch and check.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from glmrun import models
from glmrun.errors import MediaError, OutsideSuiteError
from glmrun.plan import sendrules
from glmrun.safety.suitefiles import inside_suite

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Zhipu's limit per image
MAX_IMAGE_SIDE = 6000  # pixels, each of width and height
ACCEPTED_TYPES = ("image/jpeg", "image/png")  # "支持jpg、png、jpeg格式"
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


def check_image(data: bytes, what: str) -> str:
    """The MIME type of an image Zhipu takes; MediaError naming `what` when it breaks a rule."""
    if len(data) > MAX_IMAGE_BYTES:
        raise MediaError(f"{what} is larger than 5 MB ({len(data)} bytes): Zhipu takes images "
                         "of at most 5 MB")
    mime = image_type(data[:16])
    if mime not in ACCEPTED_TYPES:
        found = f"a {mime.split('/')[1].upper()} image" if mime else "not an image glmrun knows"
        raise MediaError(f"{what} is {found}: Zhipu takes JPEG and PNG images only")
    import imagesize

    width, height = imagesize.get(io.BytesIO(data), exif_rotation=False)
    if width < 0 or height < 0:
        raise MediaError(f"{what} is a damaged {mime.split('/')[1].upper()} image (no size "
                         "in its header)")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise MediaError(f"{what} is {width} × {height} pixels: Zhipu takes images of at most "
                         f"{MAX_IMAGE_SIDE} × {MAX_IMAGE_SIDE}")
    return mime


def check_data_url(url: str) -> None:
    """MediaError when a `data:` image URL is not base64, or its image breaks Zhipu's rules."""
    head, sep, payload = url.partition(",")
    if not sep or not head.lower().endswith(";base64") or not head.lower().startswith(
            "data:image/"):
        raise MediaError(f"data URL '{url[:40]}…' is not an inline image: write "
                         "data:image/png;base64,<base64> (or jpeg)")
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise MediaError(f"the inline image is larger than 5 MB ({len(payload) * 3 // 4} bytes "
                         "or more): Zhipu takes images of at most 5 MB")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError("the inline image's data is not valid base64") from None
    check_image(data, "the inline image")


def inline_image(url: str, *, root: Path, models: Sequence[str] = ()) -> str:
    """The URL unchanged if remote, else the file (relative to `root`) as a base64 data: URL.

    Local files and data: URLs are checked against Zhipu's rules; if one of the `models` it is
    sent to takes no base64 (glm-4v-flash), both are refused.
    """
    if url.lower().startswith("data:"):
        check_data_url(url)
        _refuse_base64(models, "an inline (data:) image")
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
        raise MediaError(f"image '{url}' is larger than 5 MB ({stat.st_size} bytes): Zhipu "
                         "takes images of at most 5 MB")
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _cache:
        data = path.read_bytes()
        mime = check_image(data, f"image '{url}'")
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    _refuse_base64(models, f"image '{url}' (a local file is sent as base64)")
    return _cache[key]


def _refuse_base64(names: Sequence[str], what: str) -> None:
    for known in filter(None, map(models.find, names)):
        if known.base64_images:
            continue
        raise MediaError(f"{known.name} takes no base64 images (Zhipu's docs), so {what} cannot "
                         "be sent: give an http(s) URL, or use another vision model "
                         "(glm-4v-plus, glm-4.6v)")


def inline_parts(content: Any, *, root: Path, models: Sequence[str] = (),
                 on_error: Callable[[MediaError], None] | None = None) -> Any:
    """Message content as sent: local image parts inlined, inline data as bare base64
    (strings pass through unchanged).

    A MediaError's `path` says which part failed: (index, "image_url", "url"). With `on_error`,
    every failing part is reported to it (and kept as written) instead of the first raised.
    """
    if isinstance(content, str):
        return content
    out: list[Any] = []
    for i, part in enumerate(content):
        if isinstance(part, Mapping) and part.get("type") == "image_url":
            image = dict(part["image_url"])
            try:  # as sent: Zhipu takes inline images as bare base64 (glmrun.plan.sendrules)
                image["url"] = _sent(inline_image(image["url"], root=root, models=models))
            except MediaError as exc:
                located = MediaError(exc.reason, (i, "image_url", "url"))
                if on_error is None:
                    raise located from None
                on_error(located)
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
