"""REST routes for labels (the shared vocabulary, with WoRMS AphiaIDs, ranks and a parent)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from aqualens.api.catalog_schemas import LabelCreate, LabelOut, LabelPatch
from aqualens.api.deps import current_user, get_session
from aqualens.catalog import labels as lab
from aqualens.catalog.ids import MAX_ID
from aqualens.catalog.tables import Label, User

router = APIRouter(prefix="/api/v1", tags=["labels"])


def label_out(session: Session, row: Label, count: int | None = None) -> dict:
    return {"id": row.id, "name": row.name, "aphia_id": row.aphia_id, "rank": row.rank,
            "parent_id": row.parent_id, "vocabulary_uri": row.vocabulary_uri,
            "supercategory": row.supercategory, "synonyms": lab.synonyms_of(session, row.id),
            "annotation_count": count}


@router.get("/labels", response_model=list[LabelOut])
def list_labels(prefix: str | None = Query(None, description="Names starting with this."),
                limit: int = Query(1000, ge=1, le=10000), offset: int = Query(0, ge=0, le=MAX_ID),
                session: Session = Depends(get_session)) -> list[dict]:
    """Labels by name with the number of current annotations using each (public vocabulary)."""
    return [label_out(session, r, n)
            for r, n in lab.list_labels(session, prefix=prefix, limit=limit, offset=offset)]


@router.post("/labels", response_model=LabelOut, status_code=201)
def create_label(body: LabelCreate, session: Session = Depends(get_session),
                 user: User = Depends(current_user)) -> dict:
    """Add a label (any user with a token)."""
    row = lab.create_label(session, body.name, aphia_id=body.aphia_id, rank=body.rank,
                           parent=body.parent, vocabulary_uri=body.vocabulary_uri,
                           supercategory=body.supercategory, synonyms=body.synonyms)
    return label_out(session, row, 0)


@router.get("/labels/{label}", response_model=LabelOut)
def get_label(label: str, session: Session = Depends(get_session)) -> dict:
    """One label by id, name or synonym."""
    return label_out(session, lab.get_label(session, label))


@router.patch("/labels/{label}", response_model=LabelOut)
def patch_label(label: str, body: LabelPatch, session: Session = Depends(get_session),
                user: User = Depends(current_user)) -> dict:
    """Change a label (admins): name, AphiaID, rank, parent (null detaches), URIs."""
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        changes.pop("name")
    return label_out(session, lab.update_label(session, label, user, **changes))
