"""Build catalogue rows directly (no ingestion) for the catalogue, API, page and CLI tests."""

from __future__ import annotations

import hashlib
import io
import itertools
from datetime import datetime, timezone
from typing import Any

from PIL import Image as PILImage

from aqualens.catalog.collections import get_or_create_collection
from aqualens.catalog.images import search_text_for
from aqualens.catalog.tables import CollectionImage, Image, User

_seq = itertools.count(1)


def png_bytes(seed: int, size: tuple[int, int] = (32, 24)) -> bytes:
    """A tiny distinct PNG."""
    img = PILImage.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_thumb(seed: int) -> bytes:
    img = PILImage.new("RGB", (16, 12), ((seed * 11) % 256, 80, 160))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def make_image(session, owner: User, *, collection: str | None = None, store=None,  # noqa: ANN001
               visibility: str = "private", name: str | None = None, **fields: Any) -> Image:
    """An Image row (and, with ``store``, its PNG blob + JPEG thumbnail); linked to ``collection``
    (created for ``owner`` when missing)."""
    n = next(_seq)
    data = png_bytes(n)
    sha = hashlib.sha256(data).hexdigest()
    thumb = None
    if store is not None:
        store.put_bytes(data)
        thumb = store.put_bytes(jpeg_thumb(n))
    name = name or f"img_{n:05d}.png"
    if isinstance(fields.get("captured_at"), str):
        fields["captured_at"] = datetime.fromisoformat(fields["captured_at"]).replace(
            tzinfo=timezone.utc)
    meta = fields.pop("meta", {})
    row = Image(sha256=sha, size=len(data), width=32, height=24, format="PNG", thumb_sha256=thumb,
                owner_id=owner.id, visibility=visibility, original_name=name, meta=meta,
                search_text=search_text_for(name, fields.get("instrument"),
                                            fields.get("station"), meta), **fields)
    session.add(row)
    session.flush()
    if collection is not None:
        c = get_or_create_collection(session, collection, owner)
        session.add(CollectionImage(collection_id=c.id, image_id=row.id, original_name=name))
        session.flush()
    return row
