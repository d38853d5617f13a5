"""api.multipart: bodies read with a limit and split into fields and files; bad ones refused."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from aqualens.api.multipart import parse_multipart, read_body
from aqualens.core.errors import TooLarge, UnsupportedMedia, ValidationError


def _form(**kw) -> tuple[bytes, str]:  # noqa: ANN003
    req = httpx.Request("POST", "http://x/", **kw)
    return req.read(), req.headers["content-type"]


def test_fields_and_files() -> None:
    body, ctype = _form(data={"top_k": "3", "note": "ünï"},
                        files=[("files", ("a.png", b"\x89PNG-a")), ("files", ("b.png", b"B")),
                               ("other", ("c.txt", b""))])
    form = parse_multipart(body, ctype)
    assert form.fields == {"top_k": "3", "note": "ünï"}
    assert [(f.field, f.filename, f.data) for f in form.files] == [
        ("files", "a.png", b"\x89PNG-a"), ("files", "b.png", b"B"), ("other", "c.txt", b"")]


@pytest.mark.parametrize(("cut", "message"), [
    (-10, "ends before the closing boundary"),
    (None, "no boundary"),
])
def test_malformed_bodies_name_the_body(cut, message) -> None:  # noqa: ANN001
    body, ctype = _form(files={"files": ("a.png", b"x" * 100)})
    if cut is None:
        ctype = "multipart/form-data"
    else:
        body = body[:cut]
    with pytest.raises(ValidationError) as err:
        parse_multipart(body, ctype)
    assert err.value.field == "body" and message in str(err.value)


def test_wrong_content_type_and_missing_disposition() -> None:
    with pytest.raises(UnsupportedMedia) as err:
        parse_multipart(b"{}", "application/json")
    assert err.value.field == "Content-Type" and "multipart/form-data" in err.value.valid
    body = b"--xx\r\nContent-Type: text/plain\r\n\r\nhello\r\n--xx--\r\n"
    with pytest.raises(ValidationError, match="no Content-Disposition"):
        parse_multipart(body, "multipart/form-data; boundary=xx")


def test_read_body_stops_at_the_limit() -> None:
    def receiver(chunks: list[bytes]):  # noqa: ANN202
        it = iter(chunks)

        async def receive() -> dict:
            chunk = next(it)
            return {"type": "http.request", "body": chunk, "more_body": chunk != chunks[-1]}
        return receive

    assert asyncio.run(read_body(receiver([b"ab", b"cd"]), 4)) == b"abcd"
    with pytest.raises(TooLarge) as err:
        asyncio.run(read_body(receiver([b"abc", b"def", b"never read"]), 4))
    assert err.value.field == "body" and "4 bytes" in str(err.value)
    with pytest.raises(TooLarge):  # refused on the declared length, before reading
        asyncio.run(read_body(receiver([b""]), 4, declared=5))

    async def gone() -> dict:
        return {"type": "http.disconnect"}
    with pytest.raises(ValidationError, match="closed the connection"):
        asyncio.run(read_body(gone, 4))
