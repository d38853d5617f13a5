"""A whole ``multipart/form-data`` body read from ASGI and split into fields and files.

The fast predict path (:mod:`aqualens.api.fastpath`) answers small requests without Starlette's
form machinery (an ``UploadFile`` with a spooled temporary file per part, dependency injection,
a thread-pool hop per file). The body is read with a size limit and parsed by python-multipart,
the parser Starlette itself uses, so what is accepted and refused is the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from aqualens.core.errors import TooLarge, UnsupportedMedia, ValidationError

Receive = Callable[[], Awaitable[dict[str, Any]]]
MAX_PARTS = 10_000
MAX_FIELD_BYTES = 1024 * 1024  # a text field (top_k, threshold, ...) is never larger


@dataclass
class FilePart:
    """One uploaded file: the form field it came in, its file name and its bytes."""

    field: str
    filename: str
    data: bytes


@dataclass
class Form:
    """The parsed body: text fields (first value wins, like Starlette's ``form.get``) and files."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[FilePart] = field(default_factory=list)


async def read_body(receive: Receive, limit: int, declared: int | None = None) -> bytes:
    """The request body, refused with TooLarge as soon as it passes ``limit`` bytes (also when
    the declared Content-Length already does), so an oversized upload is never buffered whole."""
    if declared is not None and declared > limit:
        raise TooLarge(f"the request body has {declared} bytes, more than the limit of {limit}",
                       field="body", valid=f"at most {limit} bytes")
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ValidationError("the client closed the connection before the body was sent",
                                  field="body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body is larger than the limit of {limit} bytes",
                           field="body", valid=f"at most {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary named by a Content-Type header, or UnsupportedMedia."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise UnsupportedMedia(f"expected a multipart/form-data body, got {content_type or 'none'}",
                               field="Content-Type", valid="multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary:
        raise ValidationError("malformed multipart body: the Content-Type names no boundary",
                              field="body", valid="multipart/form-data; boundary=...")
    return boundary


def parse_multipart(body: bytes, content_type: str) -> Form:
    """Split ``body`` into text fields and files; a malformed body is a ValidationError."""
    boundary = boundary_of(content_type)
    form = Form()
    state: dict[str, Any] = {"headers": {}, "name": b"", "value": b"", "data": [],
                             "ended": False}

    def on_part_begin() -> None:
        if len(form.files) + len(form.fields) >= MAX_PARTS:
            raise ValidationError(f"more than {MAX_PARTS} parts", field="body")
        state["headers"], state["data"] = {}, []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["name"].lower()] = state["value"]
        state["name"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"].append(data[start:end])

    def on_part_end() -> None:
        disposition = state["headers"].get(b"content-disposition")
        if disposition is None:
            raise ValidationError("malformed multipart body: a part has no Content-Disposition",
                                  field="body")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        data = b"".join(state["data"])
        if b"filename" in options:
            filename = options[b"filename"].decode("utf-8", "replace")
            form.files.append(FilePart(name, filename, data))
        elif len(data) > MAX_FIELD_BYTES:
            raise TooLarge(f"form field {name!r} is larger than {MAX_FIELD_BYTES} bytes",
                           field=name)
        else:
            form.fields.setdefault(name, data.decode("utf-8", "replace"))

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(boundary, {
        "on_end": on_end, "on_part_begin": on_part_begin, "on_part_data": on_part_data,
        "on_part_end": on_part_end, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end})
    try:
        parser.write(body)
        parser.finalize()
    except (ValidationError, TooLarge):
        raise
    except Exception as exc:  # noqa: BLE001 - python-multipart raises several types
        raise ValidationError(f"malformed multipart body: {exc}", field="body") from None
    if not state["ended"]:
        raise ValidationError("malformed multipart body: it ends before the closing boundary",
                              field="body", valid="a complete multipart/form-data body")
    return form
