"""COCO JSON: boxes, multi-part polygons, RLE masks (compressed or not), iscrowd, result files.

Reading:
- ``src`` is an instances JSON, a folder holding one (``annotations.json``, ``instances*.json``
  or the only ``*.json``), or a zip of such a folder. Image files are looked up next to the JSON,
  in ``images/`` and in ``../images``; an image that is only a URL (``coco_url``/``flickr_url``)
  becomes an :class:`ImageRecord` without ``path`` (the importer keeps it as annotation-only).
- A result file (a JSON *list* of ``{image_id, category_id, bbox|segmentation, score}``) needs the
  instances file that defines its images and categories: option ``gt`` (a path), or a
  ``results*.json`` beside the instances file in a folder. Results come in as predictions.
- Category ids may be 0-based or have gaps; the extra category field ``aphia_id`` is read.
- Status: an annotation's ``status`` field when present, else ``predicted`` when it has a
  ``score``, else ``validated``.

Writing: ``annotations.json`` + ``images/``; categories numbered 1..N with ``supercategory`` and
``aphia_id``; bbox and area computed from the geometry; ``score`` and ``status`` as extra fields.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aqualens.core.errors import FormatError
from aqualens.formats.base import (AnnotationRecord, Dataset, Format, ImageRecord, copy_image,
                                   find_image, opened_source, read_text, safe_float)
from aqualens.formats.geometry import GeometryProblem, area_of, bbox_of, rle_normalise


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _find_json(folder: Path) -> tuple[Path, Path | None]:
    files = sorted(p for p in folder.rglob("*.json") if p.is_file())
    results = [p for p in files if p.name.lower().startswith(("result", "detections"))]
    inst = [p for p in files if p not in results]
    pick = [p for p in inst if p.name.lower() in ("annotations.json", "_annotations.coco.json")] \
        or [p for p in inst if p.name.lower().startswith("instances")] or inst
    if not pick:
        raise FormatError(f"no COCO JSON file in {folder.name}", field=folder.name,
                          valid="annotations.json, instances*.json or any *.json")
    return pick[0], (results[0] if results else None)


def _load(path: Path, rel: str) -> Any:
    try:
        return json.loads(read_text(path, rel=rel))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{rel}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                          f"{exc.msg}", field=f"{rel}:{exc.lineno}") from None
    except RecursionError:
        raise FormatError(f"{rel}: JSON nested too deeply", field=rel) from None


class CocoFormat(Format):
    name = "coco"
    description = "COCO JSON (boxes, polygons, RLE masks, result files with scores)"

    def detect(self, src: Path) -> bool:
        src = Path(src)
        return src.suffix.lower() == ".json" or (src.is_dir() and any(src.glob("*.json")))

    def read(self, src: Path, options: dict[str, Any] | None = None) -> Dataset:
        options = options or {}
        with opened_source(Path(src)) as root:
            if root.is_dir():
                main, results = _find_json(root)
            else:
                main, results = root, None
            gt = options.get("gt")
            data = _load(main, main.name)
            if isinstance(data, list):
                if not gt:
                    raise FormatError(f"{main.name} is a COCO result list; give the instances "
                                      "file that defines its images and categories (option gt)",
                                      field=main.name)
                results, main = main, Path(gt)
                data = _load(main, main.name)
            ds = Dataset()
            state = type(self)()  # per-read state: the plugin object is shared between threads
            state._read_instances(ds, data, main)
            if results is not None:
                res = _load(results, results.name)
                if not isinstance(res, list):
                    raise FormatError(f"{results.name}: a result file must be a JSON list",
                                      field=results.name)
                state._read_annotations(ds, res, results.name, prediction=True)
            return ds

    # ------------------------------------------------------------------ reading
    def _read_instances(self, ds: Dataset, data: Any, main: Path) -> None:
        rel = main.name
        if not isinstance(data, dict):
            raise FormatError(f"{rel}: top level must be an object with images, annotations "
                              "and categories", field=rel)
        for key in ("images", "categories"):
            if not isinstance(data.get(key), list):
                raise FormatError(f"{rel}: '{key}' must be a list", field=f"{rel}:{key}")
        if not isinstance(data.get("annotations", []), list):
            raise FormatError(f"{rel}: 'annotations' must be a list", field=f"{rel}:annotations")
        self._cats: dict[int, str] = {}
        for i, cat in enumerate(data["categories"]):
            where = f"categories[{i}]"
            if not isinstance(cat, dict) or not _is_int(cat.get("id")) \
                    or not isinstance(cat.get("name"), str) or not cat["name"].strip():
                ds.problem(rel, where, "category needs an integer id and a non-empty name")
                continue
            if cat["id"] in self._cats:
                ds.problem(rel, f"category id {cat['id']}", "duplicate category id")
                continue
            aphia = cat.get("aphia_id")
            if aphia is not None and not _is_int(aphia):
                ds.problem(rel, f"category id {cat['id']}", f"aphia_id {aphia!r} is not an integer",
                           "warning")
                aphia = None
            sup = cat.get("supercategory")
            self._cats[cat["id"]] = cat["name"].strip()
            ds.ensure_label(cat["name"].strip(), aphia_id=aphia,
                            supercategory=sup if isinstance(sup, str) and sup else None)
        self._images: dict[Any, str] = {}
        root = main.parent
        refs = set()
        for i, im in enumerate(data["images"]):
            if not isinstance(im, dict) or "id" not in im or isinstance(im["id"], (dict, list)):
                ds.problem(rel, f"images[{i}]", "image needs an id")
                continue
            if im["id"] in self._images:
                ds.problem(rel, f"image id {im['id']}", "duplicate image id")
                continue
            name = im.get("file_name")
            url = im.get("coco_url") or im.get("flickr_url") or im.get("url")
            url = url if isinstance(url, str) and url else None
            if not isinstance(name, str) or not name:
                if url is None:
                    ds.problem(rel, f"image id {im['id']}", "image has neither file_name nor URL")
                    continue
                name = url.rsplit("/", 1)[-1] or str(im["id"])
            ref = name if name not in refs else f"{im['id']}/{name}"
            refs.add(ref)
            path = find_image(root, name, ("", "images", "../images")) \
                or find_image(root, Path(name).name, ("", "images", "../images"))
            w, h = im.get("width"), im.get("height")
            meta = {}
            for key in ("date_captured", "license"):
                if isinstance(im.get(key), (str, int)) and im.get(key) != "":
                    meta[key] = im[key]
            if isinstance(im.get("date_captured"), str):
                meta["captured_at"] = im["date_captured"]
            for key in ("lat", "lon", "depth"):
                if safe_float(im.get(key)) is not None:
                    meta[key] = float(im[key])
            if isinstance(im.get("metadata"), dict):
                meta.update({k: v for k, v in im["metadata"].items() if isinstance(k, str)})
            ds.images.append(ImageRecord(
                ref=ref, path=path, url=url,
                width=w if _is_int(w) and w > 0 else None, height=h if _is_int(h) and h > 0 else None,
                metadata=meta, source=f"{rel}:image id {im['id']}"))
            if path is None and url is None:
                ds.problem(rel, f"image id {im['id']}",
                           f"image file {name!r} not found beside the JSON or in images/")
            self._images[im["id"]] = ref
        self._read_annotations(ds, data.get("annotations", []), rel, prediction=False)

    def _read_annotations(self, ds: Dataset, anns: list[Any], rel: str, prediction: bool) -> None:
        for i, ann in enumerate(anns):
            where = f"annotation id {ann.get('id')}" if isinstance(ann, dict) and \
                isinstance(ann.get("id"), (int, str)) else f"annotations[{i}]"
            if not isinstance(ann, dict):
                ds.problem(rel, where, "annotation must be an object")
                continue
            img_id = ann.get("image_id")
            if isinstance(img_id, (dict, list)) or img_id not in self._images:
                ds.problem(rel, where, f"image_id {img_id!r} resolves to no image")
                continue
            cat = ann.get("category_id")
            if not _is_int(cat) or cat not in self._cats:
                ds.problem(rel, where, f"category_id {cat!r} is not a declared category")
                continue
            score = ann.get("score")
            if score is not None:
                score = safe_float(score) if not isinstance(score, bool) else None
                if score is None:
                    ds.problem(rel, where, f"score {ann.get('score')!r} is not a number")
                    continue
            try:
                gtype, geom = self._geometry(ann)
            except GeometryProblem as exc:
                ds.problem(rel, where, str(exc))
                continue
            status = ann.get("status")
            if status not in ("predicted", "validated", "dubious", "rejected"):
                if status is not None:
                    ds.problem(rel, where, f"unknown status {status!r}; using the default",
                               "warning")
                status = "predicted" if (prediction or score is not None) else "validated"
            attrs = {}
            if ann.get("iscrowd") in (1, True):
                attrs["iscrowd"] = 1
            if isinstance(ann.get("attributes"), dict):
                attrs.update(ann["attributes"])
            if "id" in ann and isinstance(ann["id"], (int, str)):
                attrs["coco_id"] = ann["id"]
            ds.annotations.append(AnnotationRecord(
                image_ref=self._images[img_id], label=self._cats[cat], geometry_type=gtype,
                geometry=geom, score=score, status=status, attributes=attrs, file=rel,
                location=where))

    @staticmethod
    def _geometry(ann: dict[str, Any]) -> tuple[str, Any]:
        if ann.get("whole_image") is True or ann.get("geometry_type") == "none":
            return "none", None
        if ann.get("geometry_type") == "box" and isinstance(ann.get("bbox"), list) \
                and len(ann["bbox"]) == 4:
            return "box", ann["bbox"]
        if ann.get("geometry_type") == "point" and isinstance(ann.get("point"), list):
            return "point", ann["point"]
        seg = ann.get("segmentation")
        if isinstance(seg, dict):
            return "mask", rle_normalise(seg)
        if isinstance(seg, list) and seg:
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seg):
                seg = [seg]  # a single flat part
            if not all(isinstance(p, list) for p in seg):
                raise GeometryProblem("segmentation must be a list of polygon parts or an RLE")
            return "polygon", [[float(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                                else v for v in p] for p in seg]
        bbox = ann.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 4:
            return "box", bbox
        if bbox is not None:
            raise GeometryProblem("bbox must be [x, y, width, height]")
        kp = ann.get("point")
        if isinstance(kp, list) and len(kp) == 2:
            return "point", kp
        return "none", None

    # ------------------------------------------------------------------ writing
    def write(self, dataset: Dataset, dest: Path, options: dict[str, Any] | None = None) -> Path:
        options = options or {}
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        labels = dataset.used_labels()
        cat_id = {lab.name: i + 1 for i, lab in enumerate(labels)}
        cats = []
        for lab in labels:
            cat = {"id": cat_id[lab.name], "name": lab.name,
                   "supercategory": lab.supercategory or ""}
            if lab.aphia_id is not None:
                cat["aphia_id"] = lab.aphia_id
            cats.append(cat)
        names = dataset.file_names()
        images, img_id = [], {}
        for i, (img, name) in enumerate(zip(dataset.images, names), start=1):
            entry: dict[str, Any] = {"id": i, "file_name": name, "width": img.width,
                                     "height": img.height}
            if img.url and img.path is None:
                entry["coco_url"] = img.url
            meta = {k: v for k, v in img.metadata.items() if v is not None}
            if meta.get("captured_at"):
                entry["date_captured"] = str(meta["captured_at"])
            if meta:
                entry["metadata"] = meta
            images.append(entry)
            img_id[img.ref] = i
            if options.get("include_images", True) and img.path is not None:
                copy_image(img, dest / "images" / name)
        anns = []
        for ann in dataset.annotations:
            if ann.image_ref not in img_id or ann.label is None:
                continue
            entry = {"id": len(anns) + 1, "image_id": img_id[ann.image_ref],
                     "category_id": cat_id[ann.label], "iscrowd": int(ann.attributes.get(
                         "iscrowd", 0) in (1, True))}
            bbox = bbox_of(ann.geometry_type, ann.geometry)
            if bbox is None:
                # A whole-image label: the full frame, so pycocotools/COCOeval accept it.
                im = images[img_id[ann.image_ref] - 1]
                bbox = [0.0, 0.0, float(im["width"] or 0), float(im["height"] or 0)]
                entry["whole_image"] = True
            entry["bbox"] = [round(float(v), 3) for v in bbox]
            entry["area"] = round(area_of(ann.geometry_type, ann.geometry) or bbox[2] * bbox[3], 3)
            if ann.geometry_type == "polygon":
                entry["segmentation"] = ann.geometry
            elif ann.geometry_type == "mask":
                entry["segmentation"] = ann.geometry
            else:
                # Boxes, points, whole-image labels: the box outline, so pycocotools and
                # COCOeval (segm too) accept every annotation; ``geometry_type`` says what it is.
                x, y, w, h = entry["bbox"]
                entry["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
                entry["geometry_type"] = ann.geometry_type
            if ann.geometry_type == "point":
                entry["point"] = ann.geometry
            if ann.score is not None:
                entry["score"] = ann.score
            entry["status"] = ann.status
            extra = {k: v for k, v in ann.attributes.items() if k not in ("iscrowd", "coco_id")}
            if extra:
                entry["attributes"] = extra
            anns.append(entry)
        doc = {"info": {"description": dataset.meta.get("description", "AquaLens export"),
                        "version": "1.0"},
               "licenses": [], "images": images, "annotations": anns, "categories": cats}
        out = dest / "annotations.json"
        out.write_text(json.dumps(doc, default=str))
        return out
