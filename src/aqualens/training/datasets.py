"""Freezing training datasets: select images + annotations, compute the split, store the
version (:mod:`aqualens.catalog.datasets` holds the frozen rows and everything that reads them),
and turn a frozen version into training items.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from aqualens.catalog.datasets import check_dataset_name, create_version, next_version
from aqualens.catalog.tables import (Annotation, Collection, CollectionImage, DatasetVersion,
                                     Image, Label, User)
from aqualens.catalog.users import visible
from aqualens.core.errors import ValidationError
from aqualens.training.data import Item
from aqualens.training.splits import (DEFAULT_FRACTIONS, make_splits, splits_from_files,
                                      splits_from_lists)

FORMAT = "aqualens-dataset/1"
STATUSES = ("predicted", "validated", "dubious", "rejected")


def _group_value(spec: str | None, img: Image, name: str) -> str | None:
    """Group of an image: ``station``, ``instrument``, ``meta.KEY`` or ``name:REGEX``."""
    if not spec:
        return None
    if spec in ("station", "instrument"):
        v = getattr(img, spec)
    elif spec.startswith("meta."):
        v = (img.meta or {}).get(spec[5:])
    elif spec.startswith(("name:", "re:")):
        pattern = spec.split(":", 1)[1]
        m = re.search(pattern, name)
        v = (m.group(1) if m.groups() else m.group(0)) if m else None
    else:
        raise ValidationError(f"unknown group key {spec!r}", field="group_by",
                              valid="station, instrument, meta.KEY or name:REGEX")
    return None if v is None else str(v)


def check_group_spec(spec: str | None) -> str | None:
    if spec is None or spec == "":
        return None
    if spec.startswith(("name:", "re:")):
        try:
            re.compile(spec.split(":", 1)[1])
        except re.error as exc:
            raise ValidationError(f"bad regular expression: {exc}", field="group_by") from None
        return spec
    if spec in ("station", "instrument") or (spec.startswith("meta.") and len(spec) > 5):
        return spec
    raise ValidationError(f"unknown group key {spec!r}", field="group_by",
                          valid="station, instrument, meta.KEY or name:REGEX")


def _select_images(session: Session, user: User | None, collection: str | int | None,
                   query: Any) -> tuple[list[Image], dict[int, str], dict[str, Any]]:
    """The images to freeze, their names, and the ``source`` record."""
    if (collection is None) == (query is None):
        raise ValidationError("give either a collection or a query", field="collection")
    if collection is not None:
        from aqualens.catalog.collections import find_collection

        coll: Collection = find_collection(session, collection, user)
        rows = session.execute(
            select(Image, CollectionImage.original_name)
            .join(CollectionImage, CollectionImage.image_id == Image.id)
            .where(CollectionImage.collection_id == coll.id, visible(Image, user))
            .order_by(Image.id)).all()
        images = [r[0] for r in rows]
        names = {r[0].id: r[1] or r[0].original_name or r[0].sha256 for r in rows}
        return images, names, {"collection": {"id": coll.id, "name": coll.name}}
    from aqualens.catalog.search import ImageQuery, iter_image_ids

    if isinstance(query, dict):
        try:
            query = ImageQuery(**query)
        except Exception as exc:  # pydantic's ValidationError names the field
            raise ValidationError(f"invalid query: {exc}", field="query") from None
    ids = list(iter_image_ids(session, query, user))
    images = []
    for i in range(0, len(ids), 500):
        images += session.scalars(select(Image).where(Image.id.in_(ids[i:i + 500]))).all()
    images.sort(key=lambda im: im.id)
    names = {im.id: im.original_name or im.sha256 for im in images}
    return images, names, {"query": query.model_dump(mode="json", exclude_none=True,
                                                     exclude={"limit", "cursor", "with_total"})}


def freeze(session: Session, user: User, name: str, *, collection: str | int | None = None,
           query: Any = None, statuses: Iterable[str] = ("validated",),
           fractions: dict[str, float] | None = None, seed: int = 0,
           group_by: str | None = None, split_files: dict[str, Path] | None = None,
           split_lists: dict[str, list[str]] | None = None,
           labels: Iterable[str] | None = None, description: str = "",
           visibility: str = "private") -> DatasetVersion:
    """Freeze a collection or an :class:`~aqualens.catalog.search.ImageQuery` as ``name@N+1``.

    ``labels`` restricts the label map (annotations of other labels are left out); ``group_by``
    keeps groups in one split; ``split_files`` ({split: file of names or sha256}) replaces the
    computed split. Raises ValidationError on an empty selection.
    """
    check_dataset_name(name)
    statuses = tuple(statuses)
    bad = [s for s in statuses if s not in STATUSES]
    if bad or not statuses:
        raise ValidationError(f"unknown annotation status {bad[0] if bad else ''!r}",
                              field="status", valid=", ".join(STATUSES))
    group_by = check_group_spec(group_by)
    images, names, source = _select_images(session, user, collection, query)
    if not images:
        raise ValidationError("the selection has no images", field="collection")
    wanted = set(labels) if labels else None
    ids = [im.id for im in images]
    anns: list[Annotation] = []
    for i in range(0, len(ids), 500):
        anns += session.scalars(
            select(Annotation).where(Annotation.image_id.in_(ids[i:i + 500]),
                                     Annotation.is_current.is_(True),
                                     Annotation.status.in_(statuses),
                                     Annotation.label_id.is_not(None),
                                     visible(Annotation, user))).all()
    label_rows = {lab.id: lab for lab in session.scalars(
        select(Label).where(Label.id.in_({a.label_id for a in anns})))} if anns else {}
    if wanted is not None:
        unknown = sorted(wanted - {lab.name for lab in label_rows.values()})
        if unknown:
            raise ValidationError(f"no annotations with label(s) {', '.join(unknown)}",
                                  field="labels")
        anns = [a for a in anns if label_rows[a.label_id].name in wanted]
    used = sorted({label_rows[a.label_id].name for a in anns})
    label_map = {"labels": [{"name": n, "aphia_id": next(lab.aphia_id for lab in label_rows.values()
                                                           if lab.name == n),
                             "label_id": next(lab.id for lab in label_rows.values()
                                              if lab.name == n)} for n in used]}
    by_image: dict[int, list[Annotation]] = {}
    for a in anns:
        by_image.setdefault(a.image_id, []).append(a)
    sha_of = {im.id: im.sha256 for im in images}
    img_records = []
    for im in sorted(images, key=lambda im: im.sha256):
        rec = {"id": im.id, "sha256": im.sha256, "name": names[im.id], "width": im.width,
               "height": im.height}
        g = _group_value(group_by, im, names[im.id])
        if g is not None:
            rec["group"] = g
        img_records.append(rec)
    ann_records = sorted(
        ({"id": a.id, "image_sha256": sha_of[a.image_id], "label": label_rows[a.label_id].name,
          "geometry_type": a.geometry_type, "geometry": a.geometry, "status": a.status,
          "source": a.source} for a in anns), key=lambda r: (r["image_sha256"], r["id"]))
    has_boxes = any(a["geometry_type"] == "box" for a in ann_records)
    task = "detect" if has_boxes else "classify"
    keys = [r["sha256"] for r in img_records]
    labs = {k: [] for k in keys}
    for a in ann_records:
        if task == "classify" or a["geometry_type"] == "box":
            labs[a["image_sha256"]].append(a["label"])
    alias = {Path(r["name"]).name: r["sha256"] for r in img_records}
    alias.update({r["name"]: r["sha256"] for r in img_records})
    if split_files:
        splits = splits_from_files(split_files, keys, alias)
        split_params: dict[str, Any] = {"method": "files",
                                        "files": {k: Path(v).name for k, v in split_files.items()}}
    elif split_lists:
        splits = splits_from_lists(split_lists, keys, alias)
        split_params = {"method": "given"}
    else:
        groups = [r.get("group", r["sha256"]) for r in img_records] if group_by else None
        splits = make_splits(keys, [labs[k] for k in keys], groups=groups, fractions=fractions,
                             seed=seed)
        split_params = {"method": "stratified", "seed": seed, "group_by": group_by,
                        "fractions": fractions or DEFAULT_FRACTIONS}
    version = next_version(session, name, user)
    source.update({"statuses": list(statuses), "labels": sorted(wanted) if wanted else None})
    manifest = {"format": FORMAT, "name": name, "version": version, "task": task,
                "source": source, "label_map": label_map, "images": img_records,
                "annotations": ann_records, "splits": splits, "split_params": split_params}
    return create_version(session, user, manifest, description=description,
                          visibility=visibility)


def training_items(dv: DatasetVersion, task: str, split: str | None = None
                   ) -> tuple[list[Item], list[str], dict[str, int]]:
    """Items of a frozen version (all, or one split) for ``task``, the label names, and counts
    of what was skipped (classify: images with no or several labels; detect: non-box labels).
    """
    m = dv.manifest or {}
    names = [lab["name"] for lab in (dv.label_map or {}).get("labels", [])]
    index = {n: i for i, n in enumerate(names)}
    keys = set(m.get("splits", {}).get(split, [])) if split else None
    if split and split not in m.get("splits", {}):
        raise ValidationError(f"{dv.ref} has no split {split!r}", field="split",
                              valid=", ".join(m.get("splits", {})) or "none")
    anns: dict[str, list[dict[str, Any]]] = {}
    for a in m.get("annotations", []):
        anns.setdefault(a["image_sha256"], []).append(a)
    items, skipped = [], {"unlabelled": 0, "ambiguous": 0, "not_boxes": 0}
    for rec in m.get("images", []):
        sha = rec["sha256"]
        if keys is not None and sha not in keys:
            continue
        mine = anns.get(sha, [])
        if task == "classify":
            labs = sorted({a["label"] for a in mine})
            if not labs:
                skipped["unlabelled"] += 1
                continue
            if len(labs) > 1:
                skipped["ambiguous"] += 1
                continue
            items.append(Item(name=rec["name"], sha256=sha, label=index[labs[0]],
                              group=rec.get("group")))
        else:
            boxes, labels = [], []
            for a in mine:
                if a["geometry_type"] != "box":
                    skipped["not_boxes"] += 1
                    continue
                x, y, w, h = a["geometry"]
                boxes.append([x, y, x + w, y + h])
                labels.append(index[a["label"]])
            items.append(Item(name=rec["name"], sha256=sha,
                              boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                              labels=np.asarray(labels, np.int64), group=rec.get("group")))
    return items, names, skipped
