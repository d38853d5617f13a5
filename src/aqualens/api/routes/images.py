"""REST routes for images: metadata, original bytes, thumbnail, metadata changes, delete.

``{image}`` is an integer id or the PID ``sha256:<hex>``.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from aqualens.api.catalog_schemas import CollectionOut, DeleteOut, ImageDetail, ImageOut, ImagePatch
from aqualens.api.deps import current_user, get_ctx, get_session, optional_user
from aqualens.api.routes.search import image_out
from aqualens.catalog.collection_crud import collection_dict
from aqualens.catalog.context import Context
from aqualens.catalog.images import delete_image, get_image, image_collections, update_image
from aqualens.catalog.tables import User
from aqualens.core.errors import NotFound

router = APIRouter(prefix="/api/v1", tags=["images"])

_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG", "image/png"), (b"RIFF", "image/webp"),
          (b"GIF8", "image/gif"), (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"),
          (b"BM", "image/bmp"))


def media_type(fmt: str | None, head: bytes = b"") -> str:
    """The content type for a stored format name (PIL's), else sniffed from the first bytes."""
    mime = PILImage.MIME.get((fmt or "").upper())
    if mime:
        return mime
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "application/octet-stream"


def _blob_response(ctx: Context, request: Request, sha: str, fmt: str | None,
                   filename: str | None = None) -> Response:
    """Blob bytes, with the sha256 as a strong ETag (content never changes under a key)."""
    etag = f'"{sha}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    store = ctx.store
    if not store.exists(sha):
        raise NotFound(f"blob sha256:{sha} is missing from the store (run 'aqualens fsck')",
                       field="sha256")
    path = store.local_path(sha)
    if path is not None:
        with open(path, "rb") as fh:
            head = fh.read(16)
        if filename:
            headers["Content-Disposition"] = f'inline; filename="{_safe(filename)}"'
        return FileResponse(path, media_type=media_type(fmt, head), headers=headers)
    fh = store.open(sha)
    head = fh.read(16)

    def chunks() -> Iterator[bytes]:
        try:
            yield head
            while chunk := fh.read(1024 * 1024):
                yield chunk
        finally:
            fh.close()

    if filename:
        headers["Content-Disposition"] = f'inline; filename="{_safe(filename)}"'
    return StreamingResponse(chunks(), media_type=media_type(fmt, head), headers=headers)


def _safe(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c if c.isascii() and c.isprintable() and c not in '"' else "_" for c in base)


@router.get("/images/{image}", response_model=ImageDetail)
def get_image_route(image: str, session: Session = Depends(get_session),
                    user: User | None = Depends(optional_user)) -> dict:
    """Image metadata, with the collections (you can see) that hold it."""
    row = get_image(session, image, user)
    out = image_out(row)
    out["collections"] = [collection_dict(c) for c in image_collections(session, row.id, user)]
    return out


@router.get("/images/{image}/collections", response_model=list[CollectionOut])
def get_image_collections(image: str, session: Session = Depends(get_session),
                          user: User | None = Depends(optional_user)) -> list[dict]:
    """The collections that hold the image."""
    row = get_image(session, image, user)
    return [collection_dict(c) for c in image_collections(session, row.id, user)]


@router.get("/images/{image}/file", response_class=Response,
            responses={200: {"content": {"image/*": {}}, "description": "The original bytes."}})
def get_image_file(image: str, request: Request, ctx: Context = Depends(get_ctx),
                   session: Session = Depends(get_session),
                   user: User | None = Depends(optional_user)) -> Response:
    """The original file, byte for byte, with its content type."""
    row = get_image(session, image, user)
    return _blob_response(ctx, request, row.sha256, row.format, row.original_name)


@router.get("/images/{image}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "At most 256 px."}})
def get_image_thumbnail(image: str, request: Request, ctx: Context = Depends(get_ctx),
                        session: Session = Depends(get_session),
                        user: User | None = Depends(optional_user)) -> Response:
    """The thumbnail made at ingest (404 when the image has none)."""
    row = get_image(session, image, user)
    if not row.thumb_sha256:
        raise NotFound(f"image {row.id} has no thumbnail", field="thumbnail")
    return _blob_response(ctx, request, row.thumb_sha256, None)


@router.patch("/images/{image}", response_model=ImageOut)
def patch_image(image: str, body: ImagePatch, session: Session = Depends(get_session),
                user: User = Depends(current_user)) -> dict:
    """Change captured_at, position, depth, instrument, station, metadata or visibility.
    Send null to clear a value; absent fields stay as they are."""
    changes = body.model_dump(exclude_unset=True)
    if "visibility" in changes and changes["visibility"] is None:
        changes.pop("visibility")
    return image_out(update_image(session, image, user, **changes))


@router.delete("/images/{image}", response_model=DeleteOut)
def delete_image_route(image: str, ctx: Context = Depends(get_ctx),
                       session: Session = Depends(get_session),
                       user: User = Depends(current_user)) -> dict:
    """Delete an image, its collection links and annotations. Its blob and thumbnail are removed
    from the store only when no other row references that content."""
    session.commit()  # release the request's transaction: the delete runs in its own
    out = delete_image(ctx, image, user)
    return {"id": out["id"], "deleted": True, "details": {"blobs_removed": out["blobs_removed"]}}
