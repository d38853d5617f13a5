"""Small builders shared by the interchange tests: tiny images, datasets, DB snapshots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import func, select

from aqualens.catalog.tables import Annotation, Collection, CollectionImage, Image as ImageRow
from aqualens.catalog.tables import Label, LabelSynonym
from aqualens.formats.base import AnnotationRecord, Dataset, ImageRecord, LabelRecord
from aqualens.formats.geometry import rle_encode


def make_image(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    """A small random RGB image (distinct content per seed)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def sample_dataset(folder: Path) -> Dataset:
    """Three images with boxes, a two-part polygon, a mask, a whole-image label and scores."""
    paths = [make_image(folder / f"img{i}.png", 64, 48, seed=i) for i in range(3)]
    mask = np.zeros((48, 64), dtype=bool)
    mask[10:20, 30:45] = True
    ds = Dataset(
        images=[ImageRecord(ref=p.name, path=p, width=64, height=48,
                            metadata={"lat": 43.5, "lon": 7.25, "captured_at": "2021-06-01T12:30:00",
                                      "depth": 12.0})
                for p in paths],
        labels=[LabelRecord("Copepoda", aphia_id=1080), LabelRecord("Fish", aphia_id=11676),
                LabelRecord("detritus")],
        annotations=[
            AnnotationRecord("img0.png", "Copepoda", "box", [2.0, 3.0, 20.0, 10.0]),
            AnnotationRecord("img0.png", "Fish", "box", [30.0, 20.0, 12.5, 8.0], score=0.75,
                             status="predicted"),
            AnnotationRecord("img1.png", "Fish", "polygon",
                             [[1.0, 1.0, 10.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 20.0, 30.0, 30.0, 20.0, 30.0]]),
            AnnotationRecord("img1.png", "detritus", "mask", rle_encode(mask)),
            AnnotationRecord("img2.png", "Copepoda", "none", None, score=0.5, status="predicted"),
        ])
    return ds


def snapshot(ctx) -> dict[str, int]:  # noqa: ANN001
    """Row counts of everything an import may write."""
    out = {}
    with ctx.session() as s:
        for table in (ImageRow, CollectionImage, Annotation, Label, LabelSynonym, Collection):
            out[table.__tablename__] = s.scalar(select(func.count()).select_from(table))
    return out


def stored(ctx, collection: str) -> list[tuple]:  # noqa: ANN001
    """(sha256, label, geometry_type, rounded geometry, score, status) of a collection."""
    from aqualens.formats.geometry import geometry_key

    with ctx.session() as s:
        coll = s.scalar(select(Collection).where(Collection.name == collection))
        q = (select(ImageRow.sha256, Label.name, Annotation.geometry_type, Annotation.geometry,
                    Annotation.score, Annotation.status)
             .join(Annotation, Annotation.image_id == ImageRow.id)
             .join(Label, Label.id == Annotation.label_id)
             .join(CollectionImage, CollectionImage.image_id == ImageRow.id)
             .where(CollectionImage.collection_id == coll.id, Annotation.is_current.is_(True)))
        return sorted((sha, name, gt, geometry_key(gt, _round(g)), None if sc is None else round(sc, 4), st)
                      for sha, name, gt, g, sc, st in s.execute(q))


def _round(g):  # noqa: ANN001, ANN202
    if isinstance(g, float):
        return round(g, 1)
    if isinstance(g, list):
        return [_round(v) for v in g]
    return g


def collection_shas(ctx, collection: str) -> set[str]:  # noqa: ANN001
    with ctx.session() as s:
        coll = s.scalar(select(Collection).where(Collection.name == collection))
        return set(s.scalars(select(ImageRow.sha256).join(
            CollectionImage, CollectionImage.image_id == ImageRow.id)
            .where(CollectionImage.collection_id == coll.id)))
