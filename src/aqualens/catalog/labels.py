"""Labels: the shared vocabulary (taxa, litter categories, ...), with synonyms and a parent tree.

Labels are instance-wide (no owner): anyone with a token may add one; changing an existing label
(its AphiaID, rank or parent) is an admin action because every annotation using it changes meaning.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aqualens.catalog.checks import check_text
from aqualens.catalog.ids import MAX_ID, id_from_ref
from aqualens.catalog.tables import Annotation, Label, LabelSynonym, User
from aqualens.core.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    Unauthorized,
    ValidationError,
)

_UNSET: Any = object()


def check_label_name(name: Any) -> str:
    """Label names: 1-300 printable characters, surrounding blanks removed."""
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 300 \
            or not name.strip().isprintable():
        raise ValidationError(f"invalid label name {name!r}", field="name",
                              valid="1-300 printable characters")
    return name.strip()


def _check_aphia(aphia_id: Any) -> int | None:
    if aphia_id is None:
        return None
    if isinstance(aphia_id, bool) or not isinstance(aphia_id, int) or \
            not 0 < aphia_id <= MAX_ID:
        raise ValidationError(f"invalid AphiaID {aphia_id!r}", field="aphia_id",
                              valid=f"a positive WoRMS AphiaID integer up to {MAX_ID}, "
                                    "e.g. 1080 (Copepoda)")
    return aphia_id



def resolve_label(session: Session, name: str) -> Label | None:
    """The label called ``name``, or whose synonym is ``name`` (exact first, then any case)."""
    if not name:
        return None
    row = session.scalar(select(Label).where(Label.name == name))
    if row is not None:
        return row
    syn = session.scalar(select(LabelSynonym).where(LabelSynonym.synonym == name))
    if syn is not None:
        return session.get(Label, syn.label_id)
    low = name.lower()
    row = session.scalar(select(Label).where(func.lower(Label.name) == low).order_by(Label.id))
    if row is not None:
        return row
    syn = session.scalar(select(LabelSynonym).where(func.lower(LabelSynonym.synonym) == low)
                         .order_by(LabelSynonym.id))
    return session.get(Label, syn.label_id) if syn is not None else None


def get_label(session: Session, ref: int | str) -> Label:
    """A label by id or by name/synonym; NotFound naming ``label`` otherwise."""
    row = None
    ref_id = id_from_ref(ref, "label")
    if ref_id is not None:
        row = session.get(Label, ref_id)
    if row is None and isinstance(ref, str):
        row = resolve_label(session, ref)
    if row is None:
        raise NotFound(f"no label {ref!r}", field="label")
    return row


def _parent(session: Session, parent: int | str | None) -> Label | None:
    if parent is None or parent == "":
        return None
    try:
        return get_label(session, parent)
    except NotFound:
        raise ValidationError(f"parent label {parent!r} does not exist", field="parent",
                              valid="the id or name of an existing label") from None


def create_label(session: Session, name: str, *, aphia_id: int | None = None,
                 rank: str | None = None, parent: int | str | None = None,
                 vocabulary_uri: str | None = None, supercategory: str | None = None,
                 synonyms: list[str] | None = None) -> Label:
    """A new label; Conflict when the name (or a synonym of another label) is taken."""
    name = check_label_name(name)
    if session.scalar(select(Label.id).where(func.lower(Label.name) == name.lower())) is not None:
        raise Conflict(f"label {name!r} exists already", field="name")
    if session.scalar(select(LabelSynonym).where(LabelSynonym.synonym == name)) is not None:
        raise Conflict(f"{name!r} is already a synonym of another label", field="name")
    row = Label(name=name, aphia_id=_check_aphia(aphia_id), rank=check_text(rank, "rank", 50),
                vocabulary_uri=check_text(vocabulary_uri, "vocabulary_uri", 500),
                supercategory=check_text(supercategory, "supercategory", 300))
    p = _parent(session, parent)
    row.parent_id = p.id if p else None
    session.add(row)
    session.flush()
    for syn in synonyms or []:
        add_synonym(session, row, syn)
    return row


def get_or_create_label(session: Session, name: str, aphia_id: int | None = None, *,
                        rank: str | None = None, parent: int | str | None = None,
                        vocabulary_uri: str | None = None,
                        supercategory: str | None = None) -> Label:
    """The label called ``name`` (or with that synonym), created when missing.

    An existing label without an AphiaID gets the given one; a different AphiaID is not overwritten
    (importers must not silently re-map a taxon).
    """
    name = check_label_name(name)
    row = resolve_label(session, name)
    if row is not None:
        if aphia_id is not None and row.aphia_id is None:
            row.aphia_id = _check_aphia(aphia_id)
        return row
    return create_label(session, name, aphia_id=aphia_id, rank=rank, parent=parent,
                        vocabulary_uri=vocabulary_uri, supercategory=supercategory)


def add_synonym(session: Session, label: Label, synonym: str) -> LabelSynonym:
    """Make ``synonym`` resolve to ``label``."""
    synonym = check_label_name(synonym)
    other = resolve_label(session, synonym)
    if other is not None and other.id != label.id:
        raise Conflict(f"{synonym!r} already names label {other.name!r}", field="synonyms")
    existing = session.scalar(select(LabelSynonym).where(LabelSynonym.synonym == synonym))
    if existing is not None:
        return existing
    if synonym == label.name:
        raise ValidationError("a synonym must differ from the label name", field="synonyms")
    row = LabelSynonym(synonym=synonym, label_id=label.id)
    session.add(row)
    session.flush()
    return row


def synonyms_of(session: Session, label_id: int) -> list[str]:
    return list(session.scalars(select(LabelSynonym.synonym)
                                .where(LabelSynonym.label_id == label_id)
                                .order_by(LabelSynonym.synonym)))


def update_label(session: Session, ref: int | str, user: User | None, *, name: Any = _UNSET,
                 aphia_id: Any = _UNSET, rank: Any = _UNSET, parent: Any = _UNSET,
                 vocabulary_uri: Any = _UNSET, supercategory: Any = _UNSET) -> Label:
    """Change a label (admins only). ``parent`` None detaches; cycles are refused."""
    if user is None:
        raise Unauthorized("changing a label needs an API token", field="Authorization")
    if not user.is_admin:
        raise PermissionDenied("only admins may change an existing label", field="label")
    row = get_label(session, ref)
    if name is not _UNSET:
        new = check_label_name(name)
        clash = session.scalar(select(Label).where(Label.name == new, Label.id != row.id))
        if clash is not None:
            raise Conflict(f"label {new!r} exists already", field="name")
        row.name = new
    if aphia_id is not _UNSET:
        row.aphia_id = _check_aphia(aphia_id)
    if rank is not _UNSET:
        row.rank = check_text(rank, "rank", 50)
    if vocabulary_uri is not _UNSET:
        row.vocabulary_uri = check_text(vocabulary_uri, "vocabulary_uri", 500)
    if supercategory is not _UNSET:
        row.supercategory = check_text(supercategory, "supercategory", 300)
    if parent is not _UNSET:
        p = _parent(session, parent)
        # Walk up from the new parent: meeting ``row`` would close a cycle.
        node, seen = p, set()
        while node is not None and node.id not in seen:
            if node.id == row.id:
                raise ValidationError("a label cannot be its own ancestor", field="parent")
            seen.add(node.id)
            node = session.get(Label, node.parent_id) if node.parent_id else None
        row.parent_id = p.id if p else None
    session.flush()
    return row


def list_labels(session: Session, *, prefix: str | None = None, limit: int = 1000,
                offset: int = 0) -> list[tuple[Label, int]]:
    """Labels by name with the number of current annotations using each."""
    if not 1 <= limit <= 10000:
        raise ValidationError(f"limit {limit} out of range", field="limit", valid="1..10000")
    if offset < 0:
        raise ValidationError("offset must be >= 0", field="offset")
    counts = (select(Annotation.label_id, func.count().label("n"))
              .where(Annotation.is_current.is_(True)).group_by(Annotation.label_id).subquery())
    q = (select(Label, func.coalesce(counts.c.n, 0))
         .outerjoin(counts, counts.c.label_id == Label.id).order_by(Label.name))
    if prefix:
        q = q.where(func.lower(Label.name).startswith(prefix.lower(), autoescape=True))
    return [(r[0], int(r[1])) for r in session.execute(q.limit(limit).offset(offset))]


__all__ = ["resolve_label", "get_label", "create_label", "get_or_create_label", "add_synonym",
           "update_label", "list_labels", "synonyms_of", "check_label_name"]
