"""Collections CRUD for the API, the pages and the CLI (look-up helpers live in collections.py).

Deleting a collection removes the collection and its links. Images that were only in that
collection, and that the caller may delete, go too (with their blobs, after commit, when nothing
else references them); images that are also in another collection stay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from aqualens.catalog.collections import check_name, find_collection
from aqualens.catalog.ids import check_count, check_id
from aqualens.catalog.images import as_utc, collect_blobs, delete_image_rows
from aqualens.catalog.tables import Collection, CollectionImage, Image, User
from aqualens.catalog.users import check_visibility, check_write, visible
from aqualens.core.errors import Conflict, Unauthorized, ValidationError

if TYPE_CHECKING:
    from aqualens.catalog.context import Context

_UNSET: Any = object()


def create_collection(session: Session, user: User | None, name: str, *,
                      description: str = "", visibility: str = "private",
                      meta: dict[str, Any] | None = None) -> Collection:
    """A new collection owned by ``user``; Conflict if they have one of that name."""
    if user is None:
        raise Unauthorized("creating a collection needs an API token", field="Authorization")
    name = check_name(name)
    if session.scalar(select(Collection.id).where(Collection.owner_id == user.id,
                                                  Collection.name == name)) is not None:
        raise Conflict(f"you have a collection called {name!r} already", field="name")
    if description is None or not isinstance(description, str) or len(description) > 20000:
        raise ValidationError("description must be text of at most 20000 characters",
                              field="description")
    if meta is not None and not isinstance(meta, dict):
        raise ValidationError("meta must be an object", field="meta")
    row = Collection(name=name, description=description, owner_id=user.id,
                     visibility=check_visibility(visibility), meta=dict(meta or {}))
    session.add(row)
    session.flush()
    return row


def list_collections(session: Session, user: User | None, *, owner_id: int | None = None,
                     limit: int = 200, offset: int = 0) -> list[tuple[Collection, int]]:
    """Collections ``user`` may see, with their image counts, newest first."""
    if not 1 <= limit <= 1000:
        raise ValidationError(f"limit {limit} out of range", field="limit", valid="1..1000")
    check_count(offset, "offset")
    if owner_id is not None:
        check_id(owner_id, "owner_id")
    counts = (select(CollectionImage.collection_id, func.count().label("n"))
              .group_by(CollectionImage.collection_id).subquery())
    q = (select(Collection, func.coalesce(counts.c.n, 0))
         .outerjoin(counts, counts.c.collection_id == Collection.id))
    vis = visible(Collection, user)
    if vis is not True:
        q = q.where(vis)
    if owner_id is not None:
        q = q.where(Collection.owner_id == owner_id)
    q = q.order_by(Collection.id.desc()).limit(limit).offset(offset)
    return [(r[0], int(r[1])) for r in session.execute(q)]


def update_collection(session: Session, ref: int | str, user: User | None, *,
                      name: Any = _UNSET, description: Any = _UNSET,
                      visibility: Any = _UNSET, meta: Any = _UNSET) -> Collection:
    """Rename, describe or publish a collection (owner or admin)."""
    row = find_collection(session, ref, user)
    check_write(row, user, "collection")
    if name is not _UNSET:
        new = check_name(name)
        clash = session.scalar(select(Collection.id).where(
            Collection.owner_id == row.owner_id, Collection.name == new, Collection.id != row.id))
        if clash is not None:
            raise Conflict(f"a collection called {new!r} exists already", field="name")
        row.name = new
    if description is not _UNSET:
        if not isinstance(description, str) or len(description) > 20000:
            raise ValidationError("description must be text of at most 20000 characters",
                                  field="description")
        row.description = description
    if visibility is not _UNSET:
        row.visibility = check_visibility(visibility)
    if meta is not _UNSET:
        if not isinstance(meta, dict):
            raise ValidationError("meta must be an object", field="meta")
        row.meta = dict(meta)
    session.flush()
    return row


def delete_collection(ctx: Context, ref: int | str, user: User | None) -> dict[str, Any]:
    """Delete a collection (owner or admin) and the images used nowhere else; see module doc."""
    with ctx.session() as s:
        row = find_collection(s, ref, user)
        check_write(row, user, "collection")
        cid = row.id
        others = (select(CollectionImage.image_id)
                  .where(CollectionImage.collection_id != cid).scalar_subquery())
        only_here = list(s.scalars(
            select(Image).join(CollectionImage, CollectionImage.image_id == Image.id)
            .where(CollectionImage.collection_id == cid, Image.id.not_in(others))))
        blobs: list[str] = []
        deleted = kept = 0
        for img in only_here:
            if user is not None and (user.is_admin or img.owner_id == user.id):
                blobs += delete_image_rows(s, img)
                deleted += 1
            else:
                kept += 1
        links = s.execute(delete(CollectionImage).where(CollectionImage.collection_id == cid))
        s.execute(delete(Collection).where(Collection.id == cid))
        s.expunge(row)
    removed = collect_blobs(ctx, blobs)
    return {"id": cid, "deleted": True, "links_removed": links.rowcount + deleted,
            "images_deleted": deleted, "images_kept": kept, "blobs_removed": len(removed)}


def remove_image_from_collection(session: Session, ref: int | str, image_id: int,
                                 user: User | None) -> bool:
    """Unlink one image from a collection (the image itself stays); False when not linked."""
    row = find_collection(session, ref, user)
    check_write(row, user, "collection")
    res = session.execute(delete(CollectionImage).where(CollectionImage.collection_id == row.id,
                                                        CollectionImage.image_id ==
                                                        check_id(image_id, "image_id")))
    return res.rowcount > 0


def collection_dict(c: Collection, count: int | None = None) -> dict[str, Any]:
    """A JSON-ready view of a collection."""
    return {"id": c.id, "name": c.name, "description": c.description, "owner_id": c.owner_id,
            "visibility": c.visibility, "meta": c.meta or {}, "image_count": count,
            "created_at": as_utc(c.created_at)}


__all__ = ["create_collection", "list_collections", "update_collection", "delete_collection",
           "remove_image_from_collection", "collection_dict"]
