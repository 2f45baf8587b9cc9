"""A gzip bomb: a small gzip body that decodes to about a gigabyte, for clients' limits."""

from __future__ import annotations

import functools
import zlib


class _Bits:
    """Deflate's bit order: fields LSB first, Huffman codes MSB first (RFC 1951 3.1.1)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self._acc = 0
        self._n = 0

    def put(self, value: int, nbits: int) -> None:
        self._acc |= value << self._n
        self._n += nbits
        while self._n >= 8:
            self.out.append(self._acc & 0xFF)
            self._acc >>= 8
            self._n -= 8

    def code(self, code: int, nbits: int) -> None:
        self.put(int(format(code, f"0{nbits}b")[::-1], 2), nbits)

    def literal(self, byte: int) -> None:  # the fixed literal/length code (3.2.6)
        if byte <= 143:
            self.code(0x30 + byte, 8)
        else:
            self.code(0x190 + byte - 144, 9)

    def repeat_258(self) -> None:  # length 258 (code 285), distance 1 (code 0)
        self.code(0xC5, 8)
        self.code(0, 5)

    def end(self) -> bytes:
        self.code(0, 7)  # end of block
        if self._n:
            self.out.append(self._acc & 0xFF)
        return bytes(self.out)


@functools.lru_cache(maxsize=4)
def _bomb_padding(size: int) -> tuple[bytes, int, int, int]:
    """The start of a deflate stream of about `size` spaces: (bytes up to the repeated
    part, times the 13-byte pattern repeats, matches left over, exact number of spaces).
    Each 258-byte match costs 13 bits, so 8 of them are exactly 13 bytes: the middle of the
    stream is one pattern repeated, and a gigabyte takes ~7 MB and no compression time."""
    head = _Bits()
    head.put(1, 1)  # BFINAL
    head.put(1, 2)  # BTYPE 01: fixed Huffman codes
    head.literal(0x20)
    head.repeat_258()  # 3 + 8 + 13 = 24 bits: byte-aligned from here on
    matches = max(1, (size - 1) // 258)
    repeats, rest = divmod(matches - 1, 8)
    return bytes(head.out), repeats, rest, 1 + 258 * matches


@functools.lru_cache(maxsize=4)
def _spaces_crc(n: int) -> int:
    block = b" " * (1 << 20)
    crc = 0
    for _ in range(n >> 20):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(block[: n & ((1 << 20) - 1)], crc)


_PATTERN: bytes = b""


def gzip_bomb(tail: bytes, size: int) -> bytes:
    """A gzip body that decodes to ~`size` spaces followed by `tail`: valid JSON once decoded
    (leading whitespace), or valid SSE when `tail` starts with a newline (a line of spaces
    is no field). One line, so a client's cost is its memory, not millions of lines."""
    global _PATTERN
    if not _PATTERN:
        bits = _Bits()
        for _ in range(8):
            bits.repeat_258()
        _PATTERN = bytes(bits.out)
    head, repeats, rest, spaces = _bomb_padding(size)
    last = _Bits()
    for _ in range(rest):
        last.repeat_258()
    for byte in tail:
        last.literal(byte)
    crc = zlib.crc32(tail, _spaces_crc(spaces))
    length = (spaces + len(tail)) & 0xFFFFFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = crc.to_bytes(4, "little") + length.to_bytes(4, "little")
    return header + head + _PATTERN * repeats + last.end() + trailer
