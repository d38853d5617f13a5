"""Collections: named, owned groups of images."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aqualens.catalog.ids import id_from_ref
from aqualens.catalog.tables import Collection, CollectionImage, User
from aqualens.catalog.users import can_read, check_visibility, visible
from aqualens.core.errors import NotFound, ValidationError


def check_name(name: str) -> str:
    """Collection names: 1-200 printable characters, no slash (they appear in paths and URLs)."""
    name = (name or "").strip()
    if not name or len(name) > 200 or "/" in name or not name.isprintable():
        raise ValidationError(f"invalid collection name {name!r}", field="collection",
                              valid="1-200 printable characters without '/'")
    return name


def find_collection(session: Session, ref: str | int, user: User | None) -> Collection:
    """A collection by id or name that ``user`` may read; own collections win on name clashes."""
    query = select(Collection).where(visible(Collection, user))
    ref_id = id_from_ref(ref, "collection")
    if ref_id is not None:
        row = session.scalar(query.where(Collection.id == ref_id))
    else:
        rows = session.scalars(query.where(Collection.name == ref)).all()
        own = [r for r in rows if user is not None and r.owner_id == user.id]
        row = (own or rows or [None])[0]
    if row is None:
        raise NotFound(f"no collection {ref!r}", field="collection")
    return row


def get_or_create_collection(session: Session, name: str, owner: User, *,
                             visibility: str = "private", description: str = "") -> Collection:
    """The owner's collection called ``name``, created when missing."""
    name = check_name(name)
    row = session.scalar(select(Collection).where(Collection.owner_id == owner.id,
                                                  Collection.name == name))
    if row is None:
        row = Collection(name=name, owner_id=owner.id, visibility=check_visibility(visibility),
                         description=description)
        session.add(row)
        session.flush()
    return row


def collection_size(session: Session, collection_id: int) -> int:
    """Number of images in a collection."""
    return session.scalar(select(func.count()).select_from(CollectionImage)
                          .where(CollectionImage.collection_id == collection_id)) or 0


__all__ = ["check_name", "find_collection", "get_or_create_collection", "collection_size",
           "can_read"]
