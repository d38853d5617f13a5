"""REST routes for annotations. PATCH is a correction (a new row supersedes the old one) and
DELETE marks the annotation rejected by superseding it; the history is never lost."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from aqualens.api.catalog_schemas import AnnotationCreate, AnnotationOut, AnnotationPatch
from aqualens.api.deps import current_user, get_session, optional_user
from aqualens.catalog import annotations as ann
from aqualens.catalog.images import as_utc, get_image
from aqualens.catalog.labels import resolve_label
from aqualens.catalog.tables import User
from aqualens.core.errors import ValidationError

router = APIRouter(prefix="/api/v1", tags=["annotations"])


def _out(a: Any) -> dict:
    d = ann.annotation_dict(a)
    d["created_at"] = as_utc(d["created_at"])
    return d


def _label_id(session: Session, name: str | None, label_id: int | None) -> int | None:
    """``label`` (name or synonym) or ``label_id``; an unknown name is a 422 naming ``label``."""
    if name is not None and label_id is not None:
        raise ValidationError("give label or label_id, not both", field="label")
    if name is not None:
        row = resolve_label(session, name)
        if row is None:
            raise ValidationError(f"unknown label {name!r}", field="label",
                                  valid="an existing label name or synonym (POST /api/v1/labels "
                                        "adds one)")
        return row.id
    return label_id


@router.get("/images/{image}/annotations", response_model=list[AnnotationOut])
def list_annotations(image: str, history: bool = Query(False, description=(
                         "Include superseded rows (the full correction history).")),
                     session: Session = Depends(get_session),
                     user: User | None = Depends(optional_user)) -> list[dict]:
    """The current annotations of an image (or every row with history=true)."""
    row = get_image(session, image, user)
    return [_out(a) for a in ann.list_annotations(session, row.id, user, history=history)]


@router.post("/images/{image}/annotations", response_model=AnnotationOut, status_code=201)
def create_annotation(image: str, body: AnnotationCreate, session: Session = Depends(get_session),
                      user: User = Depends(current_user)) -> dict:
    """Add a human annotation to an image you own."""
    row = get_image(session, image, user)
    a = ann.create_annotation(session, row.id, user,
                              label_id=_label_id(session, body.label, body.label_id),
                              geometry_type=body.geometry_type, geometry=body.geometry,
                              score=body.score, status=body.status,
                              attributes=body.attributes, visibility=body.visibility)
    return _out(a)


@router.get("/annotations/{annotation_id}", response_model=AnnotationOut)
def get_annotation(annotation_id: int, session: Session = Depends(get_session),
                   user: User | None = Depends(optional_user)) -> dict:
    """One annotation (current or historical)."""
    return _out(ann.get_annotation(session, annotation_id, user))


@router.patch("/annotations/{annotation_id}", response_model=AnnotationOut)
def correct_annotation(annotation_id: int, body: AnnotationPatch,
                       session: Session = Depends(get_session),
                       user: User = Depends(current_user)) -> dict:
    """Correct an annotation: returns the NEW current row (its ``supersedes_id`` is the old id).
    Only the current row of a chain can be corrected (409 otherwise)."""
    changes = body.model_dump(exclude_unset=True)
    name = changes.pop("label", None)
    if name is not None or "label_id" in changes:
        changes["label_id"] = _label_id(session, name, changes.get("label_id"))
    for key in ("geometry_type", "status", "visibility", "attributes"):
        if key in changes and changes[key] is None:
            raise ValidationError(f"{key} cannot be null", field=key)
    if not changes:
        raise ValidationError("nothing to change", field="body",
                              valid="one or more of label, label_id, geometry_type, geometry, "
                                    "score, status, attributes, visibility")
    return _out(ann.correct_annotation(session, annotation_id, user, **changes))


@router.delete("/annotations/{annotation_id}", response_model=AnnotationOut)
def delete_annotation(annotation_id: int, session: Session = Depends(get_session),
                      user: User = Depends(current_user)) -> dict:
    """Reject an annotation: a new current row with status ``rejected`` supersedes it, so the
    history shows who removed it and when. Returns that row."""
    return _out(ann.delete_annotation(session, annotation_id, user))


@router.get("/annotations/{annotation_id}/history", response_model=list[AnnotationOut])
def annotation_history(annotation_id: int, session: Session = Depends(get_session),
                       user: User | None = Depends(optional_user)) -> list[dict]:
    """Every version of this annotation, oldest first; the last one is current."""
    return [_out(a) for a in ann.annotation_history(session, annotation_id, user, check=True)]
