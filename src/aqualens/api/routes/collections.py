"""REST routes for collections: create, list (with image counts), get, patch, delete, browse."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.orm import Session

from aqualens.api.catalog_schemas import (CollectionCreate, CollectionOut, CollectionPatch,
                                          DeleteOut, SearchPage)
from aqualens.api.deps import current_user, get_ctx, get_session, optional_user
from aqualens.api.routes.search import page_out
from aqualens.catalog import collection_crud as crud
from aqualens.catalog.collections import collection_size, find_collection
from aqualens.catalog.context import Context
from aqualens.catalog.ids import MAX_ID
from aqualens.catalog.search import ImageQuery, search_images
from aqualens.catalog.tables import User
from aqualens.core.errors import NotFound

router = APIRouter(prefix="/api/v1", tags=["collections"])


@router.get("/collections", response_model=list[CollectionOut])
def list_collections(limit: int = Query(200, ge=1, le=1000), offset: int = Query(0, ge=0, le=MAX_ID),
                     owner_id: int | None = Query(None, description="Only this owner's.",
                                                 le=MAX_ID),
                     session: Session = Depends(get_session),
                     user: User | None = Depends(optional_user)) -> list[dict]:
    """Collections you can see (anonymous: public ones), newest first, with image counts."""
    rows = crud.list_collections(session, user, owner_id=owner_id, limit=limit, offset=offset)
    return [crud.collection_dict(c, n) for c, n in rows]


@router.post("/collections", response_model=CollectionOut, status_code=201)
def create_collection(body: CollectionCreate, session: Session = Depends(get_session),
                      user: User = Depends(current_user)) -> dict:
    """Create a collection owned by the caller."""
    row = crud.create_collection(session, user, body.name, description=body.description,
                                 visibility=body.visibility, meta=body.meta)
    return crud.collection_dict(row, 0)


@router.get("/collections/{collection}", response_model=CollectionOut)
def get_collection(collection: str, session: Session = Depends(get_session),
                   user: User | None = Depends(optional_user)) -> dict:
    """One collection by id or name."""
    row = find_collection(session, collection, user)
    return crud.collection_dict(row, collection_size(session, row.id))


@router.patch("/collections/{collection}", response_model=CollectionOut)
def patch_collection(collection: str, body: CollectionPatch,
                     session: Session = Depends(get_session),
                     user: User = Depends(current_user)) -> dict:
    """Change name, description, visibility or metadata (owner or admin)."""
    changes = body.model_dump(exclude_unset=True)
    for key in ("name", "description", "visibility", "meta"):
        if key in changes and changes[key] is None:
            changes.pop(key)
    row = crud.update_collection(session, collection, user, **changes)
    return crud.collection_dict(row, collection_size(session, row.id))


@router.delete("/collections/{collection}", response_model=DeleteOut)
def delete_collection(collection: str, ctx: Context = Depends(get_ctx),
                      session: Session = Depends(get_session),
                      user: User = Depends(current_user)) -> dict:
    """Delete a collection and its links; images also in other collections stay, images only
    here are deleted (their blobs too, once nothing references them)."""
    session.commit()  # release the request's transaction: the delete runs in its own
    out = crud.delete_collection(ctx, collection, user)
    return {"id": out.pop("id"), "deleted": out.pop("deleted"), "details": out}


@router.get("/collections/{collection}/images", response_model=SearchPage)
def collection_images(collection: str, limit: int = Query(50, ge=1, le=1000),
                      cursor: str | None = None, session: Session = Depends(get_session),
                      user: User | None = Depends(optional_user)) -> dict:
    """Images of a collection, keyset-paginated by id (use /search for more filters)."""
    row = find_collection(session, collection, user)
    q = ImageQuery.parse({"collection": row.id, "limit": limit, "cursor": cursor})
    return page_out(search_images(session, q, user))


@router.delete("/collections/{collection}/images/{image_id}", status_code=204)
def unlink_image(collection: str, image_id: int, session: Session = Depends(get_session),
                 user: User = Depends(current_user)) -> Response:
    """Remove one image from a collection; the image itself and its other links stay."""
    if not crud.remove_image_from_collection(session, collection, image_id, user):
        raise NotFound(f"image {image_id} is not in collection {collection!r}", field="image_id")
    return Response(status_code=204)
