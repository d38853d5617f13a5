"""``POST /api/v1/collections/{id}/images``: upload images (and zip/tar archives) into a collection.

The multipart body is parsed as a stream: each part goes straight into its own temp file, so big
uploads never sit in memory, and a part over ``limits.max_file_bytes`` stops being written at the
limit (it is rejected as too large while the other files still go in). Parts:

- ``files`` (repeatable; any part with a file name counts): images, zip or tar archives;
- ``metadata`` (optional file part): a CSV/TSV/JSON sidecar keyed by file name;
- ``map`` (optional, repeatable text field): ``field=column`` sidecar mapping.

Answers the ingest report: 201 when images were added to the collection, 200 when every file was
already in it, 413/415/422 (with the report in ``details``) when every file was rejected.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.orm import Session

from aqualens.api.deps import current_user, get_ctx, get_session
from aqualens.catalog.collections import find_collection
from aqualens.catalog.context import Context
from aqualens.catalog.tables import User
from aqualens.catalog.users import check_write
from aqualens.core.errors import TooLarge, UnsupportedMedia, ValidationError
from aqualens.ingest import report as R

router = APIRouter(prefix="/api/v1", tags=["images"])

# A request may carry several files; its whole body is capped at this many times the file limit.
REQUEST_FILES_FACTOR = 4
MAX_PARTS = 10_000
MAX_FIELD_BYTES = 64 * 1024


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    path: Path | None = None
    size: int = 0
    too_large: bool = False
    value: bytearray = field(default_factory=bytearray)
    fh: Any = None


class _UploadParser:
    """Streams a multipart body into temp files under ``tmp``, one per file part."""

    def __init__(self, boundary: bytes, tmp: Path, max_file: int) -> None:
        self.tmp = tmp
        self.max_file = max_file
        self.parts: list[_Part] = []
        self._part: _Part | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self.parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
            "on_header_field": self._hfield, "on_header_value": self._hvalue,
            "on_header_end": self._hend, "on_headers_finished": self._headers_done})

    def write(self, chunk: bytes) -> None:
        self.parser.write(chunk)

    def _begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise TooLarge(f"more than {MAX_PARTS} parts in one request", field="files")
        self._part = _Part()
        self._headers = {}

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _hend(self) -> None:
        self._headers[bytes(self._header_field).decode("latin-1").lower()] = bytes(
            self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_done(self) -> None:
        part = self._part
        assert part is not None
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        part.name = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in params:
            part.filename = params[b"filename"].decode("utf-8", "replace") or "unnamed"
            suffix = "".join(Path(part.filename.replace("\\", "/")).suffixes[-2:])[:20]
            fd, tmp = tempfile.mkstemp(dir=self.tmp, suffix=_safe_suffix(suffix))
            part.path = Path(tmp)
            part.fh = os.fdopen(fd, "wb")

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        assert part is not None
        n = end - start
        part.size += n
        if part.fh is None:  # a text field: small by nature
            if part.size > MAX_FIELD_BYTES:
                raise TooLarge(f"form field {part.name!r} is over {MAX_FIELD_BYTES} bytes",
                               field=part.name)
            part.value += data[start:end]
        elif part.size > self.max_file:
            part.too_large = True  # keep counting, stop writing
        else:
            part.fh.write(data[start:end])

    def _end(self) -> None:
        part = self._part
        if part is None:
            return
        if part.fh is not None:
            part.fh.close()
            part.fh = None
            if part.too_large and part.path:
                part.path.unlink(missing_ok=True)
        self.parts.append(part)
        self._part = None

    def close(self) -> None:
        for part in [*self.parts, *([self._part] if self._part else [])]:
            if part.fh is not None:
                part.fh.close()


def _safe_suffix(suffix: str) -> str:
    return "".join(c for c in suffix.lower() if c.isalnum() or c == ".")


async def _read_body(request: Request, tmp: Path, max_file: int) -> list[_Part]:
    content_type = request.headers.get("content-type", "")
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UnsupportedMedia("upload must be multipart/form-data", field="Content-Type",
                               valid="multipart/form-data with 'files' parts")
    max_total = max_file * REQUEST_FILES_FACTOR
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_total:
        raise TooLarge(f"request body of {declared} bytes is over {max_total} bytes; split the "
                       "upload into several requests", field="Content-Length")
    parser = _UploadParser(params[b"boundary"], tmp, max_file)
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_total:
                raise TooLarge(f"request body is over {max_total} bytes; split the upload into "
                               "several requests", field="Content-Length")
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise ValidationError(f"malformed multipart body: {exc}", field="body",
                                      valid="multipart/form-data as RFC 7578 describes") from None
        if parser._part is not None:
            raise ValidationError("multipart body ends inside a part (upload cut short?)",
                                  field="body")
    finally:
        parser.close()
    return parser.parts


def _failure(report: R.IngestReport) -> Exception:
    """The error for an upload where nothing went in: the most telling status for the reasons."""
    codes = {r.code for r in report.rejected}
    details = report.to_dict()
    if not report.rejected:
        return ValidationError("the request holds no image files", field="files",
                               valid="one or more 'files' parts: images, zip or tar archives")
    message = f"all {len(report.rejected)} files were rejected; first: " \
              f"{report.rejected[0].name}: {report.rejected[0].reason}"
    if codes == {R.TOO_LARGE}:
        return TooLarge(message, field="files", details=details)
    if codes == {R.NOT_AN_IMAGE}:
        return UnsupportedMedia(message, field="files", details=details)
    return ValidationError(message, field="files", details=details)


@router.post(
    "/collections/{collection_id}/images", status_code=201,
    summary="Upload images, zip or tar archives into a collection",
    responses={200: {"description": "every file was already in the collection"},
               201: {"description": "images were added; the ingest report"},
               413: {"description": "too large (report in details)"},
               415: {"description": "nothing was an image (report in details)"},
               422: {"description": "bad sidecar, or every file rejected (report in details)"}},
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["files"], "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "images, zip or tar archives"},
            "metadata": {"type": "string", "format": "binary",
                         "description": "sidecar CSV/TSV/JSON keyed by file name"},
            "map": {"type": "array", "items": {"type": "string"},
                    "description": "field=column sidecar mapping, e.g. lat=Latitude"}}}}}}})
async def upload_images(collection_id: int, request: Request,
                        user: User = Depends(current_user),
                        session: Session = Depends(get_session),
                        ctx: Context = Depends(get_ctx)) -> JSONResponse:
    """Ingest the uploaded files into the collection and answer the report."""
    from aqualens.ingest.pipeline import ingest_items
    from aqualens.ingest.sidecar import parse_mapping, read_sidecar
    from aqualens.ingest.sources import iter_file, unsafe_reason

    collection = find_collection(session, collection_id, user)
    check_write(collection, user, "collection")
    owner_id, visibility = user.id, collection.visibility
    session.commit()  # release the request's write (token last_used_at) before the long ingest
    limits = ctx.settings.limits
    tmp_root = ctx.settings.data_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="upload-", dir=tmp_root) as tmp:
        parts = await _read_body(request, Path(tmp), limits.max_file_bytes)
        mapping = parse_mapping([bytes(p.value).decode("utf-8", "replace")
                                 for p in parts if p.name == "map" and p.filename is None])
        meta_parts = [p for p in parts if p.name == "metadata" and p.filename is not None]
        if len(meta_parts) > 1:
            raise ValidationError("only one metadata part is allowed", field="metadata")
        metadata = None
        if meta_parts:
            meta = meta_parts[0]
            if meta.too_large:
                raise TooLarge(f"metadata file {meta.filename} is over the size limit",
                               field="metadata")
            metadata = await run_in_threadpool(read_sidecar, meta.path, mapping, meta.filename)
        items: list[Any] = []
        files: list[tuple[str, Path]] = []
        for part in parts:
            if part.filename is None or part in meta_parts:
                continue
            name = part.filename.replace("\\", "/")
            why = unsafe_reason(name)
            if why:
                items.append(R.Rejection(name, why.replace("archive member", "upload file"),
                                         R.UNSAFE_PATH))
            elif part.too_large:
                items.append(R.Rejection(name, f"{part.size} bytes is over the size limit of "
                                               f"{limits.max_file_bytes} bytes", R.TOO_LARGE))
            else:
                files.append((name, part.path))

        def run() -> R.IngestReport:
            stream = itertools.chain(items, (i for name, path in files for i in iter_file(
                path, name, limits.max_file_bytes, Path(tmp))))
            return ingest_items(ctx, stream, collection_id=collection_id,
                                owner_id=owner_id, metadata=metadata, visibility=visibility)

        report = await run_in_threadpool(run)
    if not report.accepted:
        raise _failure(report)
    return JSONResponse(report.to_dict(), status_code=201 if report.linked else 200)
