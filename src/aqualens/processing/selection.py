"""Which images a job covers: explicit ids, a collection, or a catalogue query.

Job parameters name the selection as plain JSON (they travel to workers)::

    {"image_ids": [1, 2, 3]}                 # explicit
    {"collection": "obsea-cam1"}              # name or id, as the owner sees it
    {"query": {"collection": "c", "label": "Copepoda", "captured_from": "2024-01-01"}}

Queries go through ``aqualens.catalog.search.iter_image_ids`` (the platform's search, so a job
sees exactly what the user sees in a search); ids and collections are resolved here directly.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from aqualens.catalog.ids import check_id
from aqualens.catalog.tables import CollectionImage, Image, User
from aqualens.catalog.users import visible
from aqualens.core.errors import ValidationError

SELECTORS = ("image_ids", "collection", "query")


def check_selection(params: dict) -> None:
    """Exactly one selector must be given, of the right type."""
    given = [k for k in SELECTORS if params.get(k) not in (None, "", [])]
    if len(given) != 1:
        raise ValidationError("give exactly one of image_ids, collection, query",
                              field="/".join(SELECTORS), valid="one selector")
    if "image_ids" in given:
        ids = params["image_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                for i in ids):
            raise ValidationError("image_ids must be a list of integers", field="image_ids")
        for i in ids:
            check_id(i, "image_ids")
    if "query" in given and not isinstance(params["query"], dict):
        raise ValidationError("query must be an object of search fields", field="query")


def select_image_ids(session: Session, params: dict, owner_id: int) -> list[int]:
    """Image ids for the selection in ``params``, as visible to the job's owner, ascending."""
    check_selection(params)
    user = session.get(User, owner_id)
    if params.get("image_ids"):
        wanted = sorted(set(params["image_ids"]))
        found = set(session.scalars(select(Image.id).where(Image.id.in_(wanted),
                                                           visible(Image, user))))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise ValidationError(f"no image(s) {missing[:10]}", field="image_ids")
        return wanted
    if params.get("collection") not in (None, ""):
        from aqualens.catalog.collections import find_collection

        coll = find_collection(session, params["collection"], user)
        return list(session.scalars(
            select(CollectionImage.image_id).where(CollectionImage.collection_id == coll.id)
            .order_by(CollectionImage.image_id)))
    try:
        from aqualens.catalog.search import ImageQuery, iter_image_ids
    except ImportError as exc:  # the search module is another team's; say so clearly
        raise ValidationError("catalogue queries are not available in this build",
                              field="query") from exc
    query = ImageQuery.parse(params["query"])
    return sorted(set(iter_image_ids(session, query, user)))
