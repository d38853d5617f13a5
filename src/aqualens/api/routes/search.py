"""REST routes for catalogue search and facet counts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from aqualens.api.catalog_schemas import FacetsOut, SearchPage
from aqualens.api.deps import get_ctx, get_session, optional_user
from aqualens.catalog.context import Context
from aqualens.catalog.db import get_engine
from aqualens.catalog.text_index import ensure_text_index
from aqualens.core.errors import ValidationError
from aqualens.catalog.images import image_dict
from aqualens.catalog.search import ImageQuery, Page, facets, search_images
from aqualens.catalog.tables import Image, User

router = APIRouter(prefix="/api/v1", tags=["search"])

# Documented here once; the values are validated by ImageQuery so that the CLI, the pages and
# the API give the same messages.
_FILTERS = {name: f.description for name, f in ImageQuery.model_fields.items()}


def text_index_ready(ctx: Context = Depends(get_ctx)) -> None:
    """Make sure the free-text index exists, before the request's transaction takes any lock
    (a dependency listed first runs first)."""
    ensure_text_index(get_engine(ctx.db_url))


def image_out(img: Image) -> dict[str, Any]:
    """An image row as the API shows it, with links to its bytes."""
    out = image_dict(img)
    out["file_url"] = f"/api/v1/images/{img.id}/file"
    out["thumbnail_url"] = f"/api/v1/images/{img.id}/thumbnail" if img.thumb_sha256 else None
    return out


def page_out(page: Page) -> dict[str, Any]:
    return {"items": [image_out(i) for i in page.items], "next_cursor": page.next_cursor,
            "total": page.total}


def _query(request: Request, allowed: set[str]) -> ImageQuery:
    params = request.query_params
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValidationError(f"unknown search parameter {unknown[0]!r}", field=unknown[0],
                              valid=", ".join(sorted(allowed)))
    for key in params:
        if len(params.getlist(key)) > 1:
            raise ValidationError(f"{key} given more than once", field=key)
    return ImageQuery.parse(dict(params))


_ALL = set(ImageQuery.model_fields)


@router.get("/search", response_model=SearchPage)
def search(request: Request, _index: None = Depends(text_index_ready),
           collection: str | None = Query(None, description=_FILTERS["collection"]),
           label: str | None = Query(None, description=_FILTERS["label"]),
           status: str | None = Query(None, description=_FILTERS["status"]),
           captured_from: str | None = Query(None, description=_FILTERS["captured_from"]),
           captured_to: str | None = Query(None, description=_FILTERS["captured_to"]),
           bbox: str | None = Query(None, description=_FILTERS["bbox"],
                                    examples=["-10,35,5,45"]),
           depth_min: str | None = Query(None, description=_FILTERS["depth_min"]),
           depth_max: str | None = Query(None, description=_FILTERS["depth_max"]),
           instrument: str | None = Query(None, description=_FILTERS["instrument"]),
           station: str | None = Query(None, description=_FILTERS["station"]),
           text: str | None = Query(None, description=_FILTERS["text"]),
           limit: str | None = Query(None, description=_FILTERS["limit"]),
           cursor: str | None = Query(None, description=_FILTERS["cursor"]),
           with_total: str | None = Query(None, description=_FILTERS["with_total"]),
           session: Session = Depends(get_session),
           user: User | None = Depends(optional_user)) -> dict:
    """Images matching every given filter, ordered by id, one page at a time.

    Anonymous callers see public images only. Follow `next_cursor` for the next page.
    """
    return page_out(search_images(session, _query(request, _ALL), user))


@router.get("/search/facets", response_model=FacetsOut)
def search_facets(request: Request, _index: None = Depends(text_index_ready),
                  collection: str | None = Query(None, description=_FILTERS["collection"]),
                  label: str | None = Query(None, description=_FILTERS["label"]),
                  status: str | None = Query(None, description=_FILTERS["status"]),
                  captured_from: str | None = Query(None),
                  captured_to: str | None = Query(None),
                  bbox: str | None = Query(None, description=_FILTERS["bbox"]),
                  depth_min: str | None = Query(None), depth_max: str | None = Query(None),
                  instrument: str | None = Query(None), station: str | None = Query(None),
                  text: str | None = Query(None),
                  top: int = Query(20, ge=1, le=1000, description="Values per facet."),
                  session: Session = Depends(get_session),
                  user: User | None = Depends(optional_user)) -> dict:
    """Counts of matching images per label, collection and instrument."""
    allowed = _ALL - {"limit", "cursor", "with_total"} | {"top"}
    params = {k: v for k, v in request.query_params.items() if k != "top"}
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise ValidationError(f"unknown facet parameter {unknown[0]!r}", field=unknown[0],
                              valid=", ".join(sorted(allowed)))
    out = facets(session, ImageQuery.parse(params), user, top=top)
    for entries in out.values():
        for e in entries:
            e["value"] = str(e["value"])
    return out
