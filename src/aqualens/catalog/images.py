"""Images in the catalogue: look-up by id or PID, metadata updates, deletion with blob clean-up.

Deletion is two-phase: the rows go in one transaction, and the blobs are removed only after that
commit and only when no row references the content any more (another image's thumbnail, a model
artefact). A crash between the two leaves an orphan blob, which ``aqualens fsck`` reports; it never
leaves a row without its blob.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.orm import Session

from aqualens.catalog.checks import check_text
from aqualens.catalog.ids import check_id, is_decimal
from aqualens.catalog.tables import (
    Annotation,
    Collection,
    CollectionImage,
    Image,
    Model,
    User,
)
from aqualens.catalog.users import can_read, check_visibility, check_write, visible
from aqualens.core.errors import NotFound, ValidationError

if TYPE_CHECKING:
    from aqualens.catalog.context import Context

_PID = re.compile(r"^sha256:([0-9a-f]{64})$")
_UNSET: Any = object()


def search_text_for(original_name: str | None, instrument: str | None = None,
                    station: str | None = None, meta: dict[str, Any] | None = None) -> str:
    """The lower-cased text that free-text search matches: name, instrument, station, metadata
    values (and keys). Ingestion and metadata updates both use this, so search sees one format."""
    parts: list[str] = [original_name or "", instrument or "", station or ""]
    for key, value in (meta or {}).items():
        parts.append(str(key))
        if value is not None and not isinstance(value, (dict, list)):
            parts.append(str(value))
    return " ".join(p for p in parts if p).lower()


def get_image(session: Session, ref: int | str, user: User | None) -> Image:
    """An image by id or ``sha256:<hex>`` PID that ``user`` may read (NotFound otherwise)."""
    row = None
    if isinstance(ref, int) and not isinstance(ref, bool) or is_decimal(ref):
        row = session.get(Image, check_id(int(ref), "image_id"))
    elif isinstance(ref, str) and _PID.match(ref.strip().lower()):
        sha = _PID.match(ref.strip().lower()).group(1)
        row = session.scalar(select(Image).where(Image.sha256 == sha))
    else:
        raise ValidationError(f"not an image id or PID: {ref!r}", field="image_id",
                              valid="an integer id or sha256:<64 hex>")
    if row is None or not can_read(row, user):
        raise NotFound(f"no image {ref!r}", field="image_id")
    return row


def _float(value: Any, field: str, lo: float, hi: float) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{field} {value!r} is not a number", field=field,
                              valid=f"{lo}..{hi}") from None
    if isinstance(value, bool) or not math.isfinite(f) or not lo <= f <= hi:
        raise ValidationError(f"{field} {value!r} out of range", field=field, valid=f"{lo}..{hi}")
    return f


def parse_datetime(value: Any, field: str = "captured_at") -> datetime | None:
    """ISO 8601 date or date-time; naive values are taken as UTC."""
    if value is None or isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(f"{field} {value!r} is not an ISO 8601 date/time", field=field,
                                  valid="e.g. 2024-05-01 or 2024-05-01T12:00:00Z") from None
    if dt is not None:
        # Stored and compared in UTC: SQLite keeps no offset, so everything is normalised first.
        dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    return dt


def as_utc(dt: datetime | None) -> datetime | None:
    """Rows read back from SQLite are naive UTC; mark them as such for output."""
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def update_image(session: Session, ref: int | str, user: User | None, *,
                 captured_at: Any = _UNSET, lat: Any = _UNSET, lon: Any = _UNSET,
                 depth: Any = _UNSET, instrument: Any = _UNSET, station: Any = _UNSET,
                 meta: Any = _UNSET, visibility: Any = _UNSET) -> Image:
    """Change an image's metadata (owner or admin). ``meta`` replaces the free metadata."""
    row = get_image(session, ref, user)
    check_write(row, user, "image")
    if captured_at is not _UNSET:
        row.captured_at = parse_datetime(captured_at)
    if lat is not _UNSET:
        row.lat = _float(lat, "lat", -90, 90)
    if lon is not _UNSET:
        row.lon = _float(lon, "lon", -180, 180)
    if depth is not _UNSET:
        # Depth in metres, positive down; a little negative allows sensors above the surface.
        row.depth = _float(depth, "depth", -100, 12000)
    if instrument is not _UNSET:
        row.instrument = check_text(instrument, "instrument")
    if station is not _UNSET:
        row.station = check_text(station, "station")
    if meta is not _UNSET:
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise ValidationError("meta must be an object", field="meta", valid="a JSON object")
        row.meta = dict(meta)
    if visibility is not _UNSET:
        row.visibility = check_visibility(visibility)
    row.search_text = search_text_for(row.original_name, row.instrument, row.station, row.meta)
    session.flush()
    return row


def image_collections(session: Session, image_id: int, user: User | None) -> list[Collection]:
    """The collections (visible to ``user``) that hold the image."""
    q = (select(Collection).join(CollectionImage, CollectionImage.collection_id == Collection.id)
         .where(CollectionImage.image_id == image_id, visible(Collection, user))
         .order_by(Collection.id))
    return list(session.scalars(q))


def referenced(session: Session, sha: str) -> bool:
    """Whether any row still needs the blob ``sha`` (image, thumbnail, model artefact)."""
    q = select(or_(exists().where(Image.sha256 == sha), exists().where(Image.thumb_sha256 == sha),
                   exists().where(Model.artefact_sha256 == sha),
                   exists().where(Model.package_sha256 == sha)))
    return bool(session.scalar(q))


def delete_image_rows(session: Session, image: Image) -> list[str]:
    """Delete one image row, its collection links and its annotations, in the caller's
    transaction. Returns the blob keys that may become unreferenced (collect after commit)."""
    blobs = [image.sha256] + ([image.thumb_sha256] if image.thumb_sha256 else [])
    session.execute(delete(CollectionImage).where(CollectionImage.image_id == image.id))
    # The image is gone, so its annotation history goes with it (chains point inside it).
    session.execute(delete(Annotation).where(Annotation.image_id == image.id)
                    .execution_options(synchronize_session=False))
    session.execute(delete(Image).where(Image.id == image.id)
                    .execution_options(synchronize_session=False))
    session.expunge(image)
    return blobs


def collect_blobs(ctx: Context, candidates: list[str]) -> list[str]:
    """After commit: delete each blob nothing references any more; returns those deleted."""
    removed = []
    with ctx.session() as s:
        for sha in dict.fromkeys(candidates):
            if not referenced(s, sha):
                ctx.store.delete(sha)
                removed.append(sha)
    return removed


def delete_image(ctx: Context, ref: int | str, user: User | None) -> dict[str, Any]:
    """Delete an image (owner or admin): rows in one transaction, then unreferenced blobs."""
    with ctx.session() as s:
        row = get_image(s, ref, user)
        check_write(row, user, "image")
        image_id = row.id
        blobs = delete_image_rows(s, row)
    removed = collect_blobs(ctx, blobs)
    return {"id": image_id, "deleted": True, "blobs_removed": removed}


def image_dict(img: Image) -> dict[str, Any]:
    """A JSON-ready view of an image row."""
    return {"id": img.id, "pid": img.pid, "sha256": img.sha256, "size": img.size,
            "width": img.width, "height": img.height, "format": img.format,
            "owner_id": img.owner_id, "visibility": img.visibility, "tier": img.tier,
            "captured_at": as_utc(img.captured_at), "lat": img.lat, "lon": img.lon, "depth": img.depth,
            "instrument": img.instrument, "station": img.station, "meta": img.meta or {},
            "original_name": img.original_name, "source_url": img.source_url,
            "has_thumbnail": img.thumb_sha256 is not None,
            "created_at": as_utc(img.created_at)}


__all__ = ["get_image", "update_image", "delete_image", "delete_image_rows", "collect_blobs",
           "image_collections", "referenced", "search_text_for", "parse_datetime", "as_utc", "image_dict"]
