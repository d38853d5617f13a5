"""Catalogue search: filters, stable keyset pagination and facet counts.

Results are ordered by image id. A page ends with an opaque ``next_cursor`` (the last id, encoded);
the next page asks for ``id > last``, so pages never shift or repeat when images are added while
someone pages through (new images get larger ids and show up at the end) and every page costs an
index range scan, never an OFFSET. The exact total is optional (``with_total``): counting a
million matches costs far more than finding the first 50, so the API only counts on request.

Every filter matches an indexed column (see the indexes on ``images``, ``collection_images`` and
``annotations`` in tables.py); ``bench/search.py`` holds the latency figures at 1M images.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import Select, and_, func, or_, select, text
from sqlalchemy.orm import Session

from aqualens.catalog.collections import find_collection
from aqualens.catalog.labels import resolve_label
from aqualens.catalog.search_plan import (Filters, like_pattern,  # noqa: F401 - re-exported
                                          page_ids, text_condition)
from aqualens.catalog.text_index import common_trigrams, text_index_kind
from aqualens.catalog.tables import (ANNOTATION_STATUSES, Annotation, Collection, CollectionImage,
                                     Image, Label, User)
from aqualens.catalog.users import visible
from aqualens.core.errors import NotFound, ValidationError

MAX_LIMIT = 1000


def _date_or_datetime(value: Any, end: bool) -> Any:
    """A bare date means the whole day: from its start, or up to (and including) its end."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        value = date.fromisoformat(value.strip())
    if isinstance(value, date) and not isinstance(value, datetime):
        start = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
        return start + timedelta(days=1) - timedelta(microseconds=1) if end else start
    return value


class ImageQuery(BaseModel):
    """What to look for. Every field is optional; filters combine with AND."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    collection: int | str | None = Field(None, description="Collection id or name.")
    label: str | None = Field(None, max_length=300, description=(
        "Label name or synonym: images with a current, non-rejected annotation with this label."))
    status: Literal["predicted", "validated", "dubious", "rejected"] | None = Field(
        None, description="Annotation status; with `label`, the same annotation must match both.")
    captured_from: datetime | None = Field(None, description="ISO date/time, inclusive (UTC "
                                           "when no offset).")
    captured_to: datetime | None = Field(None, description="ISO date/time, inclusive; a bare "
                                         "date includes that whole day.")
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="min_lon,min_lat,max_lon,max_lat (WGS84); min_lon > max_lon crosses "
                          "the antimeridian.")
    depth_min: float | None = Field(None, ge=-100, le=12000, description="Metres, inclusive.")
    depth_max: float | None = Field(None, ge=-100, le=12000, description="Metres, inclusive.")
    instrument: str | None = Field(None, max_length=200, description="Exact instrument name.")
    station: str | None = Field(None, max_length=200, description="Exact station/camera name.")
    text: str | None = Field(None, max_length=200, description=(
        "Free text: every word must occur in the image name or metadata "
        "(case-insensitive)."))
    limit: int = Field(50, ge=1, le=MAX_LIMIT, description="Page size, 1..1000.")
    cursor: str | None = Field(None, max_length=100, description="`next_cursor` of the "
                               "previous page.")
    with_total: bool = Field(False, description="Also count all matches (slower on big "
                                                "catalogues).")

    @field_validator("collection", "label", "instrument", "station", "text", "cursor",
                     mode="before")
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("captured_from", mode="before")
    @classmethod
    def _from(cls, v: Any) -> Any:
        return _date_or_datetime(v, end=False)

    @field_validator("captured_to", mode="before")
    @classmethod
    def _to(cls, v: Any) -> Any:
        return _date_or_datetime(v, end=True)

    @field_validator("captured_from", "captured_to")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)

    @field_validator("bbox", mode="before")
    @classmethod
    def _bbox(cls, v: Any) -> Any:
        if isinstance(v, str):
            parts = [p for p in v.split(",")]
            if len(parts) != 4:
                raise ValueError("bbox needs 4 comma-separated numbers: "
                                 "min_lon,min_lat,max_lon,max_lat")
            try:
                return tuple(float(p) for p in parts)
            except ValueError:
                raise ValueError("bbox values must be numbers") from None
        if isinstance(v, (list, tuple)) and len(v) != 4:
            raise ValueError("bbox needs 4 numbers: min_lon,min_lat,max_lon,max_lat")
        return v

    @field_validator("bbox")
    @classmethod
    def _bbox_range(cls, v: tuple[float, float, float, float] | None) -> Any:
        if v is None:
            return v
        min_lon, min_lat, max_lon, max_lat = v
        if not all(-180 <= x <= 180 for x in (min_lon, max_lon)):
            raise ValueError("bbox longitudes must be within -180..180")
        if not all(-90 <= y <= 90 for y in (min_lat, max_lat)):
            raise ValueError("bbox latitudes must be within -90..90")
        if min_lat > max_lat:
            raise ValueError("bbox min_lat must not exceed max_lat")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> ImageQuery:
        if self.captured_from and self.captured_to and self.captured_from > self.captured_to:
            raise ValueError("captured_from is after captured_to")
        if self.depth_min is not None and self.depth_max is not None and \
                self.depth_min > self.depth_max:
            raise ValueError("depth_min is greater than depth_max")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any]) -> ImageQuery:
        """Build from untrusted input (query strings, CLI options); errors name the field."""
        try:
            return cls.model_validate({k: v for k, v in data.items() if v is not None})
        except PydanticValidationError as exc:
            err = exc.errors()[0]
            loc = [str(p) for p in err.get("loc", ()) if not str(p).isdigit()]
            name = loc[0] if loc else _guess_field(err.get("msg", ""))
            msg = err.get("msg", "invalid").removeprefix("Value error, ")
            raise ValidationError(msg if msg.startswith(name) else f"{name}: {msg}", field=name,
                                  details=[{"field": ".".join(map(str, e.get("loc", ()))),
                                            "message": e.get("msg")} for e in exc.errors()]
                                  ) from None


def _guess_field(msg: str) -> str:
    for name in ImageQuery.model_fields:
        if name in msg:
            return name
    return "query"


@dataclass
class Page:
    """One page of results; ``next_cursor`` is None on the last page."""

    items: list[Image]
    next_cursor: str | None
    total: int | None = None
    facets: dict[str, Any] | None = field(default=None)


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor continues after; ValidationError naming ``cursor`` when malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        tag, _, value = raw.partition(":")
        if tag != "v1" or not value.isdigit():
            raise ValueError(raw)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError(f"invalid cursor {cursor!r}", field="cursor",
                              valid="the next_cursor value of a previous page") from None


def text_words(text: str) -> list[str]:
    """The words of a free-text query (split on blanks), lower-cased; at most 10."""
    return text.lower().split()[:10]


def _text_condition(words: list[str], index: str | None) -> Any:
    """Every word occurs in the name or metadata (see ``search_plan.text_condition``)."""
    return text_condition(words, index)


@dataclass
class _Plan:
    """The filters of a query, resolved against the catalogue once."""

    where: list[Any]
    collection_id: int | None
    filters: Filters

    def key(self) -> Any:
        """The id column the keyset orders on: the membership table's when filtering by
        collection, so the (collection_id, image_id) primary key drives the scan."""
        return CollectionImage.image_id if self.collection_id is not None else Image.id

    def apply(self, q: Select) -> Select:
        if self.collection_id is not None:
            q = q.select_from(Image).join(CollectionImage, and_(CollectionImage.image_id == Image.id,
                                             CollectionImage.collection_id == self.collection_id))
        return q.where(*self.where)


def _annotation_filter(label: Label | None, status: str | None, user: User | None) -> Any:
    sub = select(Annotation.image_id).where(Annotation.is_current.is_(True))
    if label is not None:
        sub = sub.where(Annotation.label_id == label.id)
    if status is not None:
        sub = sub.where(Annotation.status == status)
    else:
        sub = sub.where(Annotation.status != "rejected")
    vis = visible(Annotation, user)
    if vis is not True:
        sub = sub.where(vis)
    return Image.id.in_(sub)


def plan(session: Session, query: ImageQuery, user: User | None) -> _Plan:
    """Resolve names (collection, label) and build the WHERE clauses for ``query``."""
    if session.get_bind().dialect.name == "postgresql":
        # psycopg prepares statements run 5+ times and PostgreSQL may then switch to a generic
        # plan that ignores the actual values; for "ORDER BY id LIMIT n" under a selective filter
        # that plan can scan the whole table. Planning each search (~0.2 ms) is far cheaper.
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    where: list[Any] = []
    vis = visible(Image, user)
    if vis is not True:
        where.append(vis)
    collection_id = None
    if query.collection is not None:
        try:
            collection_id = find_collection(session, query.collection, user).id
        except NotFound:
            raise ValidationError(f"no collection {query.collection!r}", field="collection",
                                  valid="the id or name of a collection you can see") from None
    label = None
    if query.label is not None:
        label = resolve_label(session, query.label)
        if label is None:
            raise ValidationError(f"unknown label {query.label!r}", field="label",
                                  valid="a label name or synonym (GET /api/v1/labels)")
    sqlite = session.get_bind().dialect.name == "sqlite"
    f = Filters(sqlite=sqlite, user=user, collection_id=collection_id,
                label_id=label.id if label is not None else None, status=query.status,
                annotations=label is not None or query.status is not None,
                captured_from=query.captured_from, captured_to=query.captured_to, bbox=query.bbox,
                depth_min=query.depth_min, depth_max=query.depth_max,
                instrument=query.instrument, station=query.station,
                words=text_words(query.text) if query.text is not None else [])
    if f.annotations:
        where.append(_annotation_filter(label, query.status, user))
    if query.captured_from is not None:
        where.append(Image.captured_at >= query.captured_from)
    if query.captured_to is not None:
        where.append(Image.captured_at <= query.captured_to)
    if query.bbox is not None:
        min_lon, min_lat, max_lon, max_lat = query.bbox
        where.append(Image.lat.between(min_lat, max_lat))
        if min_lon <= max_lon:
            where.append(Image.lon.between(min_lon, max_lon))
        else:  # crosses the antimeridian
            where.append(or_(Image.lon >= min_lon, Image.lon <= max_lon))
    if query.depth_min is not None:
        where.append(Image.depth >= query.depth_min)
    if query.depth_max is not None:
        where.append(Image.depth <= query.depth_max)
    if query.instrument is not None:
        where.append(Image.instrument == query.instrument)
    if query.station is not None:
        where.append(Image.station == query.station)
    if query.text is not None:
        f.text_index = text_index_kind(session)
        if f.text_index == "garr":
            f.common_grams = common_trigrams(session)
        where.append(_text_condition(f.words, f.text_index))
    return _Plan(where, collection_id, f)


def search_images(session: Session, query: ImageQuery, user: User | None) -> Page:
    """One page of images matching ``query`` that ``user`` may see, ordered by id.

    The ids of the page come from an adaptive plan (``search_plan.page_ids``: the index that
    drives the scan is chosen from capped counts), the rows from one primary-key lookup."""
    p = plan(session, query, user)
    after = decode_cursor(query.cursor) if query.cursor else None
    ids, _ = page_ids(session, p.filters, after, query.limit + 1)
    more = len(ids) > query.limit
    ids = ids[:query.limit]
    rows = list(session.scalars(select(Image).where(Image.id.in_(ids)).order_by(Image.id))) \
        if ids else []
    total = count_images(session, query, user, _plan=p) if query.with_total else None
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None, total)


def count_images(session: Session, query: ImageQuery, user: User | None, *,
                 _plan: _Plan | None = None) -> int:
    """The exact number of matches (ignores cursor and limit). O(matches): use sparingly."""
    p = _plan or plan(session, query, user)
    return int(session.scalar(p.apply(select(func.count()).select_from(Image))) or 0)


def iter_image_ids(session: Session, query: ImageQuery, user: User | None, *,
                   batch: int = 1000) -> Iterator[int]:
    """Every matching id in ascending order (from ``query.cursor`` on), fetched in keyset
    batches so memory stays flat at millions of matches. For jobs and exports."""
    p = plan(session, query, user)
    key = p.key()
    last = decode_cursor(query.cursor) if query.cursor else None
    while True:
        q = p.apply(select(key))
        if last is not None:
            q = q.where(key > last)
        ids = list(session.scalars(q.order_by(key).limit(batch)))
        yield from ids
        if len(ids) < batch:
            return
        last = ids[-1]


def facets(session: Session, query: ImageQuery, user: User | None, *,
           top: int = 20) -> dict[str, list[dict[str, Any]]]:
    """Counts of matching images per label, collection and instrument (largest first).

    Labels count images with a current, visible, non-rejected annotation (or of the status
    asked for); collections only those the user can see.
    """
    if not 1 <= top <= 1000:
        raise ValidationError(f"top {top} out of range", field="top", valid="1..1000")
    p = plan(session, query, user)
    ids = p.apply(select(Image.id)).subquery()
    out: dict[str, list[dict[str, Any]]] = {}

    ann = (select(Annotation.label_id, func.count(func.distinct(Annotation.image_id)).label("n"))
           .where(Annotation.is_current.is_(True), Annotation.label_id.is_not(None),
                  Annotation.image_id.in_(select(ids.c.id))))
    ann = ann.where(Annotation.status == query.status) if query.status else \
        ann.where(Annotation.status != "rejected")
    vis = visible(Annotation, user)
    if vis is not True:
        ann = ann.where(vis)
    ann = ann.group_by(Annotation.label_id).subquery()
    rows = session.execute(select(Label.id, Label.name, Label.aphia_id, ann.c.n)
                           .join(ann, ann.c.label_id == Label.id)
                           .order_by(ann.c.n.desc(), Label.name).limit(top))
    out["label"] = [{"id": r[0], "value": r[1], "aphia_id": r[2], "count": int(r[3])}
                    for r in rows]

    coll = (select(CollectionImage.collection_id, func.count().label("n"))
            .where(CollectionImage.image_id.in_(select(ids.c.id)))
            .group_by(CollectionImage.collection_id).subquery())
    cq = (select(Collection.id, Collection.name, coll.c.n)
          .join(coll, coll.c.collection_id == Collection.id))
    cvis = visible(Collection, user)
    if cvis is not True:
        cq = cq.where(cvis)
    rows = session.execute(cq.order_by(coll.c.n.desc(), Collection.name).limit(top))
    out["collection"] = [{"id": r[0], "value": r[1], "count": int(r[2])} for r in rows]

    inst = (select(Image.instrument, func.count().label("n"))
            .where(Image.id.in_(select(ids.c.id)), Image.instrument.is_not(None))
            .group_by(Image.instrument).order_by(func.count().desc(), Image.instrument)
            .limit(top))
    out["instrument"] = [{"value": r[0], "count": int(r[1])} for r in session.execute(inst)]
    return out


__all__ = ["ImageQuery", "Page", "search_images", "count_images", "iter_image_ids", "facets",
           "encode_cursor", "decode_cursor", "plan", "text_words", "ANNOTATION_STATUSES"]
