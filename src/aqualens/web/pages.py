"""Server-rendered HTML pages: home (collections), a collection (thumbnail grid + search), an
image. They call the same catalogue functions as the REST routes; anonymous visitors see public
rows, and a bearer token (header) shows the caller's own rows too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from aqualens import __version__
from aqualens.api.deps import get_session, optional_user
from aqualens.api.routes.search import text_index_ready
from aqualens.catalog import collection_crud as crud
from aqualens.catalog.annotations import list_annotations
from aqualens.catalog.collections import collection_size, find_collection
from aqualens.catalog.images import get_image, image_collections, image_dict
from aqualens.catalog.search import ImageQuery, search_images
from aqualens.catalog.tables import CollectionImage, Image, User
from aqualens.catalog.users import visible
from aqualens.core.errors import AquaLensError, NotFound

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.globals["version"] = __version__

SEARCH_FIELDS = ("text", "label", "status", "instrument", "station", "captured_from",
                 "captured_to", "depth_min", "depth_max", "bbox")


def _preview(session: Session, collection_id: int, user: User | None, n: int = 4) -> list[int]:
    """Ids of the first ``n`` visible images with a thumbnail in a collection."""
    q = (select(Image.id).join(CollectionImage, CollectionImage.image_id == Image.id)
         .where(CollectionImage.collection_id == collection_id, Image.thumb_sha256.is_not(None)))
    vis = visible(Image, user)
    if vis is not True:
        q = q.where(vis)
    return list(session.scalars(q.order_by(CollectionImage.image_id).limit(n)))


def _render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, ctx, status_code=status)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: Session = Depends(get_session),
         user: User | None = Depends(optional_user)) -> HTMLResponse:
    """Collections you can see, with image counts and a few thumbnails."""
    rows = crud.list_collections(session, user, limit=200)
    cards = [{"c": c, "count": n, "thumbs": _preview(session, c.id, user)} for c, n in rows]
    return _render(request, "home.html", cards=cards, user=user)


@router.get("/collections/{collection}", response_class=HTMLResponse)
def collection_page(collection: str, request: Request,
                    _index: None = Depends(text_index_ready),
                    session: Session = Depends(get_session),
                    user: User | None = Depends(optional_user)) -> HTMLResponse:
    """A thumbnail grid of a collection, filtered by the search form, paged by cursor."""
    try:
        c = find_collection(session, collection, user)
    except NotFound as exc:
        return _render(request, "error.html", 404, message=str(exc))
    form = {k: request.query_params.get(k, "") for k in SEARCH_FIELDS}
    params: dict[str, Any] = {k: v for k, v in form.items() if v}
    params.update(collection=c.id, limit=60, cursor=request.query_params.get("cursor") or None)
    error, page = None, None
    try:
        page = search_images(session, ImageQuery.parse(params), user)
    except AquaLensError as exc:
        error = str(exc)
    next_qs = None
    if page is not None and page.next_cursor:
        from urllib.parse import urlencode

        next_qs = urlencode({**{k: v for k, v in form.items() if v}, "cursor": page.next_cursor})
    return _render(request, "collection.html", 422 if error else 200, c=c,
                   count=collection_size(session, c.id), form=form, error=error,
                   images=page.items if page else [], next_qs=next_qs, user=user)


@router.get("/images/{image}", response_class=HTMLResponse)
def image_page(image: str, request: Request, session: Session = Depends(get_session),
               user: User | None = Depends(optional_user)) -> HTMLResponse:
    """One image: the picture, its metadata, collections and current annotations."""
    try:
        row = get_image(session, image, user)
    except AquaLensError as exc:
        return _render(request, "error.html", 404, message=str(exc))
    return _render(request, "image.html", img=image_dict(row),
                   collections=image_collections(session, row.id, user),
                   annotations=list_annotations(session, row.id, user), user=user)
