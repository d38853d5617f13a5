"""Dataset versions: immutable snapshots ``name@N`` of a collection or a query.

A version freezes the image list (ids + sha256), the annotation set (current annotations with
the chosen statuses; validated only by default), the label map, the splits and a manifest whose
sha256 (of a canonical JSON) is stored beside it. Nothing can change a frozen version: there is
no update function, and an ORM guard refuses any flush that would modify its content or delete
it (only ``visibility`` and ``meta``, publication data such as a DOI, may change later).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from aqualens.catalog.ids import id_from_ref
from aqualens.catalog.tables import DatasetVersion, Model, User
from aqualens.catalog.users import check_visibility, check_write, visible
from aqualens.core.errors import Conflict, NotFound, ValidationError

FORMAT = "aqualens-dataset/1"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: Columns that may change after freezing (publication); everything else is frozen.
MUTABLE = {"visibility", "meta"}


# ---- immutability guard ---------------------------------------------------------------------

@event.listens_for(DatasetVersion, "before_update")
def _refuse_update(mapper, connection, target: DatasetVersion) -> None:  # noqa: ANN001
    from sqlalchemy import inspect

    state = inspect(target)
    changed = [a.key for a in state.attrs if a.history.has_changes() and a.key not in MUTABLE]
    if changed:
        raise Conflict(f"dataset version {target.concept}@{target.version} is frozen; "
                       f"cannot change {', '.join(sorted(changed))}", field="dataset",
                       valid="freeze a new version instead")


@event.listens_for(DatasetVersion, "before_delete")
def _refuse_delete(mapper, connection, target: DatasetVersion) -> None:  # noqa: ANN001
    from sqlalchemy.orm import object_session

    session = object_session(target)
    if not (session is not None and session.info.get("aqualens_delete_dataset") == target.id):
        raise Conflict(f"dataset version {target.concept}@{target.version} is frozen; "
                       "delete it with delete_version()", field="dataset")


# ---- references -----------------------------------------------------------------------------

def check_dataset_name(name: Any) -> str:
    """Dataset names: letters, digits, '.', '_', '-' (they appear in ``name@N`` and URLs)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValidationError(f"invalid dataset name {name!r}", field="name",
                              valid="1-200 of letters, digits, '.', '_', '-', starting with a "
                                    "letter or digit")
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"name@3"`` -> ("name", 3); ``"name"`` -> ("name", None) meaning the latest."""
    if not isinstance(ref, str) or not ref.strip():
        raise ValidationError("empty dataset reference", field="dataset", valid="NAME@N")
    name, _, ver = ref.strip().partition("@")
    check_dataset_name(name)
    if not ver:
        return name, None
    if not ver.isdigit() or int(ver) < 1:
        raise ValidationError(f"invalid dataset version {ver!r}", field="dataset",
                              valid="NAME@N with N = 1, 2, ...")
    return name, int(ver)


def get_version(session: Session, ref: str | int, user: User | None) -> DatasetVersion:
    """A version by id, ``name@N`` or ``name`` (latest) that ``user`` may read."""
    q = select(DatasetVersion).where(visible(DatasetVersion, user))
    ref_id = id_from_ref(ref, "dataset")
    if ref_id is not None:
        row = session.scalar(q.where(DatasetVersion.id == ref_id))
    else:
        name, ver = parse_ref(ref)
        q = q.where(DatasetVersion.concept == name)
        q = (q.where(DatasetVersion.version == ver) if ver is not None
             else q.order_by(DatasetVersion.version.desc()).limit(1))
        row = session.scalar(q)
    if row is None:
        raise NotFound(f"no dataset version {ref!r}", field="dataset")
    return row


def list_versions(session: Session, user: User | None, concept: str | None = None
                  ) -> list[DatasetVersion]:
    """Versions ``user`` may read, by name then version."""
    q = select(DatasetVersion).where(visible(DatasetVersion, user))
    if concept:
        q = q.where(DatasetVersion.concept == check_dataset_name(concept))
    return list(session.scalars(q.order_by(DatasetVersion.concept, DatasetVersion.version)))


# ---- manifest -------------------------------------------------------------------------------

def canonical_json(obj: Any) -> bytes:
    """The bytes the manifest checksum is computed on (sorted keys, no spaces, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def manifest_sha256(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(manifest)).hexdigest()


def verify(dv: DatasetVersion) -> bool:
    """True when the stored manifest still matches its checksum."""
    return manifest_sha256(dv.manifest) == dv.manifest_sha256


def next_version(session: Session, name: str, user: User) -> int:
    """The number the next version of ``name`` gets; only the owner of ``name`` may add one."""
    check_dataset_name(name)
    first = session.scalar(select(DatasetVersion).where(DatasetVersion.concept == name)
                           .order_by(DatasetVersion.version).limit(1))
    if first is not None:
        check_write(first, user, "dataset")
    return (session.scalar(select(func.max(DatasetVersion.version))
                           .where(DatasetVersion.concept == name)) or 0) + 1


def create_version(session: Session, user: User, manifest: dict[str, Any], *,
                   description: str = "", visibility: str = "private") -> DatasetVersion:
    """Store a complete manifest (built by :func:`aqualens.training.datasets.freeze`) as a new
    frozen row; its checksum is computed here, once."""
    check_visibility(visibility)
    for key in ("name", "version", "images", "annotations", "label_map", "splits"):
        if key not in manifest:
            raise ValidationError(f"manifest lacks {key!r}", field="manifest")
    row = DatasetVersion(concept=manifest["name"], version=manifest["version"], owner_id=user.id,
                         visibility=visibility, description=description or "",
                         source=manifest.get("source", {}), label_map=manifest["label_map"],
                         manifest=manifest, manifest_sha256=manifest_sha256(manifest),
                         meta={"task": manifest.get("task"), "images": len(manifest["images"]),
                               "annotations": len(manifest["annotations"]),
                               "splits": {k: len(v) for k, v in manifest["splits"].items()}})
    session.add(row)
    session.flush()
    return row


def delete_version(session: Session, ref: str | int, user: User) -> None:
    """Delete a version nobody depends on; refused (Conflict) when a model was trained or
    measured on it, because that would break lineage."""
    dv = get_version(session, ref, user)
    check_write(dv, user, "dataset")
    used = session.scalar(select(func.count()).select_from(Model)
                          .where(Model.dataset_version_id == dv.id))
    if used:
        raise Conflict(f"{dv.ref} is the lineage of {used} model(s)", field="dataset")
    session.info["aqualens_delete_dataset"] = dv.id
    try:
        session.delete(dv)
        session.flush()
    finally:
        session.info.pop("aqualens_delete_dataset", None)


# ---- views ----------------------------------------------------------------------------------

def version_dict(dv: DatasetVersion, *, full: bool = False) -> dict[str, Any]:
    """JSON shape of a version; ``full`` adds the label map, split sizes per label, manifest."""
    m = dv.manifest or {}
    out: dict[str, Any] = {"id": dv.id, "ref": dv.ref, "name": dv.concept,
                           "version": dv.version, "owner_id": dv.owner_id,
                           "visibility": dv.visibility, "description": dv.description,
                           "task": m.get("task"), "images": len(m.get("images", [])),
                           "annotations": len(m.get("annotations", [])),
                           "labels": [lab["name"] for lab in (dv.label_map or {}).get("labels", [])],
                           "splits": {k: len(v) for k, v in m.get("splits", {}).items()},
                           "manifest_sha256": dv.manifest_sha256, "source": dv.source,
                           "created_at": dv.created_at.isoformat() if dv.created_at else None}
    if full:
        label_of: dict[str, set[str]] = {}
        for a in m.get("annotations", []):
            label_of.setdefault(a["image_sha256"], set()).add(a["label"])
        summary = {}
        for split, keys in m.get("splits", {}).items():
            counts: dict[str, int] = {}
            for k in keys:
                for lab in label_of.get(k, ()):
                    counts[lab] = counts.get(lab, 0) + 1
            summary[split] = {"images": len(keys), "labels": dict(sorted(counts.items()))}
        out["split_summary"] = summary
        out["split_params"] = m.get("split_params")
        out["label_map"] = dv.label_map
        out["verified"] = verify(dv)
        out["meta"] = dv.meta
    return out


def _annotation_key(a: dict[str, Any]) -> tuple:
    return (a["image_sha256"], a["label"], a["geometry_type"],
            json.dumps(a["geometry"], sort_keys=True))


def diff_versions(a: DatasetVersion, b: DatasetVersion) -> dict[str, Any]:
    """What changed from ``a`` to ``b``: images, labels (label map), annotations, splits."""
    ma, mb = a.manifest or {}, b.manifest or {}
    ia = {r["sha256"]: r for r in ma.get("images", [])}
    ib = {r["sha256"]: r for r in mb.get("images", [])}
    la = {x["name"] for x in (a.label_map or {}).get("labels", [])}
    lb = {x["name"] for x in (b.label_map or {}).get("labels", [])}
    aa = {_annotation_key(x) for x in ma.get("annotations", [])}
    ab = {_annotation_key(x) for x in mb.get("annotations", [])}

    def labels_of(m: dict[str, Any]) -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for x in m.get("annotations", []):
            out.setdefault(x["image_sha256"], set()).add(x["label"])
        return {k: sorted(v) for k, v in out.items()}

    ga, gb = labels_of(ma), labels_of(mb)
    changed = sorted(s for s in set(ia) & set(ib) if ga.get(s, []) != gb.get(s, []))
    split_of = lambda m: {s: n for n, keys in m.get("splits", {}).items() for s in keys}  # noqa: E731
    sa, sb = split_of(ma), split_of(mb)
    moved = sorted(s for s in set(sa) & set(sb) if sa[s] != sb[s])
    return {"from": a.ref, "to": b.ref,
            "images_added": sorted(set(ib) - set(ia)),
            "images_removed": sorted(set(ia) - set(ib)),
            "images_relabelled": [{"sha256": s, "from": ga.get(s, []), "to": gb.get(s, [])}
                                  for s in changed],
            "labels_added": sorted(lb - la), "labels_removed": sorted(la - lb),
            "annotations_added": len(ab - aa), "annotations_removed": len(aa - ab),
            "split_moves": len(moved),
            "summary": {"images": [len(ia), len(ib)], "labels": [len(la), len(lb)],
                        "annotations": [len(aa), len(ab)]}}


def export_version(ctx: Any, ref: str | int, user: User | None, out: Path, *,
                   with_images: bool = False) -> dict[str, Any]:
    """Write ``out/manifest.json`` (+ ``out/images/<split>/<sha256>.<ext>`` with images) and a
    ``SHA256SUMS`` file. Returns a summary."""
    with ctx.session() as s:
        dv = get_version(s, ref, user)
        manifest, sha, dref = dv.manifest, dv.manifest_sha256, dv.ref
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = canonical_json(manifest)
    (out / "manifest.json").write_bytes(data)
    sums = [f"{hashlib.sha256(data).hexdigest()}  manifest.json"]
    n = 0
    if with_images:
        store = ctx.store
        split_of = {k: name for name, keys in manifest["splits"].items() for k in keys}
        for rec in manifest["images"]:
            ext = Path(rec["name"]).suffix.lower() or ".img"
            rel = Path("images") / split_of.get(rec["sha256"], "unassigned") / f"{rec['sha256']}{ext}"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(store.get_bytes(rec["sha256"]))
            sums.append(f"{rec['sha256']}  {rel.as_posix()}")
            n += 1
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return {"dataset": dref, "manifest_sha256": sha, "out": str(out), "images_written": n}
