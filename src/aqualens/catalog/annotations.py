"""Annotations: statements about an image, never edited in place.

A correction (``correct_annotation``) writes a NEW row that ``supersedes`` the old one; the old row
keeps its content and gets ``is_current=False``. Deleting (``delete_annotation``) is a correction
too: the new current row has status ``rejected``, author = whoever deleted, so the chain records who
removed it and when, and nothing is lost. Label search ignores rejected annotations unless the
caller asks for status=rejected.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aqualens.catalog.ids import check_id
from aqualens.catalog.tables import (ANNOTATION_SOURCES, ANNOTATION_STATUSES, GEOMETRY_TYPES,
                                     Annotation, Image, Label, User)
from aqualens.catalog.users import can_read, check_visibility, visible
from aqualens.core.errors import Conflict, NotFound, PermissionDenied, Unauthorized, ValidationError


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_geometry(geometry_type: str, geometry: Any) -> Any:
    """Validate ``geometry`` against ``geometry_type``; returns the normalised geometry.

    none: null; box: [x, y, w, h] with w, h > 0; point: [x, y]; polygon: list of parts, each a flat
    [x0, y0, x1, y1, ...] of at least 3 points (a single flat list is accepted as one part);
    mask: COCO RLE {"size": [h, w], "counts": str | list[int]}. Coordinates are pixels, >= 0.
    """
    if geometry_type not in GEOMETRY_TYPES:
        raise ValidationError(f"unknown geometry_type {geometry_type!r}", field="geometry_type",
                              valid=", ".join(GEOMETRY_TYPES))
    bad = ValidationError
    if geometry_type == "none":
        if geometry not in (None, [], {}):
            raise bad("geometry_type 'none' takes no geometry", field="geometry", valid="null")
        return None
    if geometry_type == "box":
        if not (isinstance(geometry, list) and len(geometry) == 4 and all(map(_num, geometry))):
            raise bad(f"box geometry must be [x, y, w, h], got {geometry!r}", field="geometry",
                      valid="[x, y, w, h] in pixels")
        x, y, w, h = geometry
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise bad(f"box {geometry!r} needs x, y >= 0 and w, h > 0", field="geometry",
                      valid="[x, y, w, h] in pixels")
        return [float(v) for v in geometry]
    if geometry_type == "point":
        if not (isinstance(geometry, list) and len(geometry) == 2 and all(map(_num, geometry))
                and min(geometry) >= 0):
            raise bad(f"point geometry must be [x, y] >= 0, got {geometry!r}", field="geometry",
                      valid="[x, y] in pixels")
        return [float(v) for v in geometry]
    if geometry_type == "polygon":
        parts = geometry
        if isinstance(parts, list) and parts and all(_num(v) for v in parts):
            parts = [parts]
        if not (isinstance(parts, list) and parts):
            raise bad("polygon geometry must be a list of parts", field="geometry",
                      valid="[[x0, y0, x1, y1, x2, y2, ...], ...]")
        for i, part in enumerate(parts):
            if not (isinstance(part, list) and len(part) >= 6 and len(part) % 2 == 0
                    and all(_num(v) and v >= 0 for v in part)):
                raise bad(f"polygon part {i} must hold >= 3 points as x, y pairs >= 0",
                          field="geometry", valid="[[x0, y0, x1, y1, x2, y2, ...], ...]")
        return [[float(v) for v in part] for part in parts]
    # mask: COCO RLE
    if not (isinstance(geometry, dict) and isinstance(geometry.get("size"), list)
            and len(geometry["size"]) == 2
            and all(isinstance(v, int) and v > 0 for v in geometry["size"])
            and (isinstance(geometry.get("counts"), str)
                 or (isinstance(geometry.get("counts"), list)
                     and all(isinstance(v, int) and v >= 0 for v in geometry["counts"])))):
        raise bad("mask geometry must be COCO RLE", field="geometry",
                  valid='{"size": [h, w], "counts": "<rle string>" or [ints]}')
    return {"size": list(geometry["size"]), "counts": geometry["counts"]}


def check_score(score: Any) -> float | None:
    if score is None:
        return None
    if not _num(score) or not 0.0 <= float(score) <= 1.0:
        raise ValidationError(f"score {score!r} out of range", field="score", valid="0..1 or null")
    return float(score)


def check_status(status: Any) -> str:
    if status not in ANNOTATION_STATUSES:
        raise ValidationError(f"unknown status {status!r}", field="status",
                              valid=", ".join(ANNOTATION_STATUSES))
    return status


def check_source(source: Any) -> str:
    if source not in ANNOTATION_SOURCES:
        raise ValidationError(f"unknown source {source!r}", field="source",
                              valid=", ".join(ANNOTATION_SOURCES))
    return source


def _check_label_id(session: Session, label_id: Any) -> int | None:
    if label_id is None:
        return None
    if isinstance(label_id, bool) or not isinstance(label_id, int) or \
            session.get(Label, check_id(label_id, "label_id")) is None:
        raise ValidationError(f"label {label_id!r} does not exist", field="label_id",
                              valid="the id of an existing label (GET /api/v1/labels)")
    return label_id


def add_annotation(session: Session, image_id: int, *, label_id: int | None,
                   geometry_type: str = "none", geometry: Any = None, score: float | None = None,
                   status: str = "validated", source: str = "human", author_id: int | None = None,
                   owner_id: int, model_id: int | None = None, job_id: str | None = None,
                   attributes: dict[str, Any] | None = None, visibility: str | None = None,
                   supersedes_id: int | None = None) -> Annotation:
    """Store one validated annotation (no permission check: callers have done it).

    ``visibility`` defaults to the image's, so public images get readable annotations.
    """
    image = session.get(Image, check_id(image_id, "image_id"))
    if image is None:
        raise NotFound(f"no image {image_id}", field="image_id")
    if attributes is not None and not isinstance(attributes, dict):
        raise ValidationError("attributes must be an object", field="attributes")
    row = Annotation(image_id=image_id, label_id=_check_label_id(session, label_id),
                     geometry_type=geometry_type if geometry_type in GEOMETRY_TYPES else "?",
                     geometry=check_geometry(geometry_type, geometry), score=check_score(score),
                     status=check_status(status), source=check_source(source),
                     author_id=author_id, owner_id=owner_id, model_id=model_id, job_id=job_id,
                     attributes=dict(attributes or {}),
                     visibility=check_visibility(visibility or image.visibility),
                     supersedes_id=supersedes_id, is_current=True)
    session.add(row)
    session.flush()
    return row


def _readable_image(session: Session, image_id: int, user: User | None) -> Image:
    image = session.get(Image, check_id(image_id, "image_id"))
    if image is None or not can_read(image, user):
        raise NotFound(f"no image {image_id}", field="image_id")
    return image


def _may_edit(ann: Annotation, image: Image, user: User | None) -> None:
    """Owners of the annotation or of the image (and admins) may correct or delete it."""
    if user is None:
        raise Unauthorized("changing an annotation needs an API token", field="Authorization")
    if not (user.is_admin or ann.owner_id == user.id or image.owner_id == user.id):
        raise PermissionDenied(f"annotation {ann.id} belongs to another user", field="annotation")


def create_annotation(session: Session, image_id: int, user: User | None, *,
                      label_id: int | None, **fields: Any) -> Annotation:
    """A human annotation by ``user`` on an image they may write (owner or admin)."""
    if user is None:
        raise Unauthorized("annotating needs an API token", field="Authorization")
    image = _readable_image(session, image_id, user)
    if not (user.is_admin or image.owner_id == user.id):
        raise PermissionDenied(f"image {image_id} belongs to another user", field="image_id")
    fields.setdefault("source", "human")
    return add_annotation(session, image_id, label_id=label_id, author_id=user.id,
                          owner_id=image.owner_id, **fields)


def get_annotation(session: Session, annotation_id: int, user: User | None) -> Annotation:
    """One annotation the caller may read (its own visibility and its image's)."""
    row = session.get(Annotation, check_id(annotation_id, "annotation_id"))
    if row is None or not can_read(row, user):
        raise NotFound(f"no annotation {annotation_id}", field="annotation_id")
    _readable_image(session, row.image_id, user)
    return row


def list_annotations(session: Session, image_id: int, user: User | None, *,
                     history: bool = False) -> list[Annotation]:
    """Annotations of an image: the current ones, or every row (history) when asked."""
    _readable_image(session, image_id, user)
    q = select(Annotation).where(Annotation.image_id == image_id, visible(Annotation, user))
    if not history:
        q = q.where(Annotation.is_current.is_(True))
    return list(session.scalars(q.order_by(Annotation.id)))


_CORRECTABLE = ("label_id", "geometry_type", "geometry", "score", "status", "attributes",
                "visibility")


def correct_annotation(session: Session, annotation_id: int, user: User | None,
                       **changes: Any) -> Annotation:
    """Supersede annotation ``annotation_id`` with a corrected copy written by ``user``.

    The old row stays (``is_current=False``); the new one has ``supersedes_id`` = the old id,
    ``source='human'``, ``author_id`` = the user, and keeps the owner. Only the current row of a
    chain may be corrected (Conflict otherwise, naming the current one).
    """
    old = get_annotation(session, annotation_id, user)
    image = session.get(Image, old.image_id)
    _may_edit(old, image, user)
    unknown = sorted(set(changes) - set(_CORRECTABLE))
    if unknown:
        raise ValidationError(f"cannot change {', '.join(unknown)}", field=unknown[0],
                              valid=", ".join(_CORRECTABLE))
    if not old.is_current:
        cur = current_of(session, old.id)
        raise Conflict(f"annotation {old.id} was superseded; correct the current one "
                       f"({cur.id if cur else 'none'})", field="annotation_id")
    values = {k: getattr(old, k) for k in _CORRECTABLE}
    values.update(changes)
    # Changing the geometry type without a geometry keeps nothing stale around.
    if "geometry_type" in changes and "geometry" not in changes:
        values["geometry"] = None
    # A human correction of a prediction validates it unless a status is given.
    if "status" not in changes and old.status == "predicted":
        values["status"] = "validated"
        values["score"] = changes.get("score")
    old.is_current = False
    session.flush()
    return add_annotation(session, old.image_id, label_id=values["label_id"],
                          geometry_type=values["geometry_type"], geometry=values["geometry"],
                          score=values["score"], status=values["status"], source="human",
                          author_id=user.id, owner_id=old.owner_id, model_id=old.model_id,
                          job_id=old.job_id, attributes=values["attributes"],
                          visibility=values["visibility"], supersedes_id=old.id)


def delete_annotation(session: Session, annotation_id: int, user: User | None) -> Annotation:
    """Delete = supersede with a ``rejected`` copy by ``user``; history is kept. Idempotent."""
    row = get_annotation(session, annotation_id, user)
    image = session.get(Image, row.image_id)
    _may_edit(row, image, user)
    if row.is_current and row.status == "rejected":
        return row
    return correct_annotation(session, annotation_id, user, status="rejected")


def current_of(session: Session, annotation_id: int) -> Annotation | None:
    """The current row of the chain ``annotation_id`` belongs to."""
    chain = _chain(session, annotation_id)
    return next((a for a in reversed(chain) if a.is_current), None)


def _chain(session: Session, annotation_id: int) -> list[Annotation]:
    row = session.get(Annotation, check_id(annotation_id, "annotation_id"))
    if row is None:
        raise NotFound(f"no annotation {annotation_id}", field="annotation_id")
    back = [row]
    seen = {row.id}
    while back[0].supersedes_id is not None and back[0].supersedes_id not in seen:
        prev = session.get(Annotation, back[0].supersedes_id)
        if prev is None:
            break
        seen.add(prev.id)
        back.insert(0, prev)
    node = row
    while True:
        nxt = session.scalar(select(Annotation).where(Annotation.supersedes_id == node.id)
                             .order_by(Annotation.id))
        if nxt is None or nxt.id in seen:
            break
        seen.add(nxt.id)
        back.append(nxt)
        node = nxt
    return back


def annotation_history(session: Session, annotation_id: int,
                       user: User | None = None, *, check: bool = False) -> list[Annotation]:
    """The whole correction chain containing ``annotation_id``, oldest first.

    With ``check=True`` the caller must be able to read the annotation (API use).
    """
    if check:
        get_annotation(session, annotation_id, user)
    return _chain(session, annotation_id)


def annotation_dict(a: Annotation) -> dict[str, Any]:
    """A JSON-ready view of an annotation (API, CLI, exports)."""
    return {"id": a.id, "image_id": a.image_id, "label_id": a.label_id,
            "label": a.label.name if a.label is not None else None,
            "geometry_type": a.geometry_type, "geometry": a.geometry, "score": a.score,
            "status": a.status, "source": a.source, "author_id": a.author_id,
            "owner_id": a.owner_id, "model_id": a.model_id, "job_id": a.job_id,
            "visibility": a.visibility, "attributes": a.attributes or {},
            "supersedes_id": a.supersedes_id, "is_current": a.is_current,
            "created_at": a.created_at}


__all__ = ["add_annotation", "create_annotation", "get_annotation", "list_annotations",
           "correct_annotation", "delete_annotation", "annotation_history", "current_of",
           "check_geometry", "check_score", "check_status", "annotation_dict"]
