"""Issue 12, Zhipu's image rules (docs.bigmodel.cn, GLM-4V: "图像大小上传限制为每张图像 5M以下，
且像素不超过 6000*6000。支持jpg、png、jpeg格式。说明：GLM-4V-Flash 不支持base64编码"),
checked by `glmrun validate` for local files and data: URLs: each broken rule is an input error
at its file:line, all at once; http(s) URLs are the server's to check."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

from fixtures.e2e.harness import REPO, glmrun, run, write

from glmrun.mock import MockServer
from glmrun.plan.media import check_image

CAT = (REPO / "convos/images/cat.png").read_bytes()


def png(width: int, height: int) -> bytes:
    """A PNG header of that size (IHDR is all a size check reads)."""
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body
            + struct.pack(">I", zlib.crc32(body)))


def jpeg(width: int, height: int) -> bytes:
    """A JPEG's first segments: SOI, then a baseline SOF0 frame of that size."""
    sof = struct.pack(">BHHHB", 8, height, width, 3, 0) + bytes(9)
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def test_the_rules_on_image_bytes() -> None:
    assert check_image(png(6000, 6000), "x") == "image/png"
    assert check_image(jpeg(640, 480), "x") == "image/jpeg"
    for data, words in (
        (png(6001, 10), "is 6001 × 10 pixels: Zhipu takes images of at most 6000 × 6000"),
        (jpeg(10, 7000), "is 10 × 7000 pixels"),
        (b"GIF89a" + bytes(20), "is a GIF image: Zhipu takes JPEG and PNG images only"),
        (b"RIFF\0\0\0\0WEBPVP8 " + bytes(20), "is a WEBP image: Zhipu takes JPEG and PNG"),
        (b"\x89PNG\r\n\x1a\n" + bytes(8), "is a damaged PNG image"),
    ):
        try:
            check_image(data, "x")
        except Exception as exc:
            assert words in str(exc), str(exc)
        else:
            raise AssertionError(f"accepted: {data[:12]!r}")


def test_validate_reports_every_broken_image_rule_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "wide.png").write_bytes(png(8000, 100))
    (tmp_path / "anim.gif").write_bytes(b"GIF89a" + bytes(40))
    big_jpeg = jpeg(100, 100) + bytes(5 * 1024 * 1024)
    (tmp_path / "big.jpg").write_bytes(big_jpeg)
    (tmp_path / "ok.png").write_bytes(CAT)
    big = data_url(png(10, 10) + bytes(5 * 1024 * 1024 + 10))
    write(tmp_path, "v.yaml", f"""
        model: glm-4v-plus
        messages:
          - role: user
            content:
              - {{type: image_url, image_url: {{url: wide.png}}}}
              - {{type: image_url, image_url: {{url: anim.gif}}}}
              - {{type: image_url, image_url: {{url: big.jpg}}}}
              - {{type: image_url, image_url: {{url: "{data_url(png(7000, 7000))}"}}}}
              - {{type: image_url, image_url: {{url: "data:image/png;base64,@@not base64@@"}}}}
              - {{type: image_url, image_url: {{url: "{big}"}}}}
              - {{type: image_url, image_url: {{url: ok.png}}}}
              - {{type: image_url, image_url: {{url: "{data_url(CAT)}"}}}}
              - {{type: image_url, image_url: {{url: "https://example.com/huge.gif"}}}}
    """)
    result = glmrun("validate", tmp_path / "v.yaml")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    where = [line.split(": ", 2)[0].rsplit(":", 2)[1] for line in lines[:-1]]
    assert where == ["6", "7", "8", "9", "10", "11"], result.output  # each image's own line
    reasons = [line.split(": ", 2)[2].removesuffix(" (conversation 'v')")
               for line in lines[:-1]]
    assert reasons == [
        "image 'wide.png' is 8000 × 100 pixels: Zhipu takes images of at most 6000 × 6000",
        "image 'anim.gif' is a GIF image: Zhipu takes JPEG and PNG images only",
        f"image 'big.jpg' is larger than 5 MB ({len(big_jpeg)} bytes): Zhipu takes images of "
        "at most 5 MB",
        "the inline image is 7000 × 7000 pixels: Zhipu takes images of at most 6000 × 6000",
        "the inline image's data is not valid base64",
        f"the inline image is larger than 5 MB ({len(big.split(',')[1]) * 3 // 4} bytes or "
        "more): Zhipu takes images of at most 5 MB",
    ]
    assert lines[-1] == "6 problems found"


def test_glm_4v_flash_takes_no_base64_image(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(CAT)
    write(tmp_path, "flash.yaml", f"""
        model: glm-4v-flash
        messages:
          - role: user
            content:
              - {{type: image_url, image_url: {{url: ok.png}}}}
              - {{type: image_url, image_url: {{url: "{data_url(CAT)}"}}}}
              - {{type: image_url, image_url: {{url: "https://example.com/cat.png"}}}}
    """)
    result = glmrun("validate", tmp_path / "flash.yaml")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{tmp_path / 'flash.yaml'}:6:44: messages[0].content[0].image_url.url: glm-4v-flash "
        "takes no base64 images (Zhipu's docs), so image 'ok.png' (a local file is sent as "
        "base64) cannot be sent: give an http(s) URL, or use another vision model "
        "(glm-4v-plus, glm-4.6v) (conversation 'flash')",
        f"{tmp_path / 'flash.yaml'}:7:44: messages[0].content[1].image_url.url: glm-4v-flash "
        "takes no base64 images (Zhipu's docs), so an inline (data:) image cannot be sent: "
        "give an http(s) URL, or use another vision model (glm-4v-plus, glm-4.6v) "
        "(conversation 'flash')",
        "2 problems found",
    ]
    # the same images on a model that takes base64 validate, and a URL alone on glm-4v-flash
    (tmp_path / "flash.yaml").write_text(
        (tmp_path / "flash.yaml").read_text().replace("glm-4v-flash", "glm-4.6v"))
    assert glmrun("validate", tmp_path / "flash.yaml").exit_code == 0
    write(tmp_path, "url.yaml", """
        model: glm-4v-flash
        messages:
          - role: user
            content: [{type: image_url, image_url: {url: "https://example.com/cat.png"}}]
    """)
    assert glmrun("validate", tmp_path / "url.yaml").exit_code == 0


def test_a_model_given_on_the_command_line_is_held_to_the_same_rule(
    api: MockServer, tmp_path: Path
) -> None:
    """--model (one, or a matrix) decides where the image goes: glm-4v-flash among them refuses
    the local image before anything is sent; models that take base64 run it."""
    (tmp_path / "ok.png").write_bytes(CAT)
    path = write(tmp_path, "v.yaml", """
        model: glm-4.6v
        messages:
          - role: user
            content: [{type: image_url, image_url: {url: ok.png}}]
    """)
    for models in (["glm-4v-flash"], ["glm-4.6v", "glm-4v-flash"]):
        args = [a for m in models for a in ("--model", m)]
        result = run(api, path, tmp_path / "out", *args)
        assert result.exit_code == 2, result.output
        assert "glm-4v-flash takes no base64 images" in result.output
        assert api.requests == []  # refused while planning
    result = run(api, path, tmp_path / "out", "--model", "glm-4.6v", "--model", "glm-4v-plus")
    assert result.exit_code == 0, result.output
    assert api.count() == 2
