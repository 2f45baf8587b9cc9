"""A multipart/form-data upload (`POST /files`) read with the standard library's email parser."""

from __future__ import annotations

from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP

from .errors import invalid


def parse_form(raw: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """Form fields by name -> (filename or None, bytes). A form is a MIME multipart message
    without its headers, so the request's Content-Type is put back in front and `email`
    splits the parts, unquotes their names and keeps their bytes as sent (no transfer
    encoding is applied to form parts)."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in (
        content_type
    ):
        raise invalid("multipart body expected")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        raise invalid("multipart body expected")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = (_filename(part), _payload(part))
    return fields


def _filename(part: Message) -> str | None:
    """The part's filename, with the `%22` that HTML form encoding (and httpx, the SDK's
    client) writes for a double quote turned back into one."""
    filename = part.get_filename()
    return filename.replace("%22", '"') if filename is not None else None


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""
