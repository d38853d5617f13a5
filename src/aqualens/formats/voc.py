"""Pascal VOC XML: a folder of per-image files with boxes, ``difficult`` and ``truncated``.

Reading: every ``*.xml`` under ``src`` (a folder or zip; ``Annotations/`` in the classic layout).
The image is ``<filename>`` looked up next to the XML, in ``JPEGImages/``, ``images/`` or the
root. Boxes: ``x = xmin``, ``w = xmax - xmin`` (pixel-edge coordinates, as CVAT, LabelImg and
Roboflow write them). ``difficult``, ``truncated``, ``occluded`` and ``pose`` are kept as
attributes. Extension elements (written by AquaLens, optional on read): ``<score>``,
``<status>``, ``<aphia_id>``.

XML is parsed without DTDs or entity expansion (defusedxml), so billion-laughs files are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET  # noqa: N817 - writing only; parsing goes through defusedxml

from aqualens.core.errors import FormatError
from aqualens.formats.base import (AnnotationRecord, Dataset, Format, ImageRecord, copy_image,
                                   find_image, opened_source, safe_float)

FLAGS = ("difficult", "truncated", "occluded")


def parse_xml(path: Path, rel: str) -> ET.Element:
    """Parse XML safely (no DTD, no entities), raising FormatError naming the file and line."""
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    try:
        if path.stat().st_size > 64 * 1024 * 1024:
            raise FormatError(f"{rel} is larger than 64 MiB", field=rel)
        return DET.parse(str(path)).getroot()
    except ET.ParseError as exc:
        line = getattr(exc, "position", (None,))[0]
        raise FormatError(f"{rel}: invalid XML: {exc}", field=f"{rel}:{line}") from None
    except DefusedXmlException as exc:
        raise FormatError(f"{rel}: refused XML ({type(exc).__name__}: DTDs and entities are "
                          "not allowed)", field=rel) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise FormatError(f"cannot read {rel}: {exc}", field=rel) from None


def _text(el: ET.Element | None, tag: str) -> str | None:
    if el is None:
        return None
    child = el.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


class VocFormat(Format):
    name = "voc"
    description = "Pascal VOC XML, one file per image (boxes, difficult, truncated)"
    geometries = ("box",)

    def detect(self, src: Path) -> bool:
        src = Path(src)
        return src.is_dir() and (any(src.glob("*.xml")) or (src / "Annotations").is_dir())

    def read(self, src: Path, options: dict[str, Any] | None = None) -> Dataset:
        with opened_source(Path(src)) as root:
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*.xml")
                                                         if p.is_file())
            base = root.parent if root.is_file() else root
            if not files:
                raise FormatError(f"no VOC *.xml file in {Path(src).name}", field=Path(src).name)
            ds = Dataset()
            refs: set[str] = set()
            for path in files:
                self._read_file(ds, path, base, refs)
            return ds

    def _read_file(self, ds: Dataset, path: Path, base: Path, refs: set[str]) -> None:
        rel = path.relative_to(base).as_posix() if path != base else path.name
        root = parse_xml(path, rel)
        if root.tag != "annotation":
            ds.problem(rel, None, f"root element is <{root.tag}>, not <annotation>")
            return
        name = _text(root, "filename")
        if not name:
            ds.problem(rel, None, "<filename> is missing")
            return
        size = root.find("size")
        w, h = safe_float(_text(size, "width")), safe_float(_text(size, "height"))
        img_path = None
        for folder in (path.parent, base, path.parent.parent):
            img_path = find_image(folder, name, ("", "JPEGImages", "images"))
            if img_path:
                break
        ref = name if name not in refs else rel.rsplit(".", 1)[0] + "/" + name
        refs.add(ref)
        if img_path is None:
            ds.problem(rel, "filename", f"image {name!r} not found next to the XML, in "
                       "JPEGImages/ or images/")
            return
        meta = {}
        for key in ("folder", "segmented"):
            if _text(root, key):
                meta[f"voc_{key}"] = _text(root, key)
        ds.images.append(ImageRecord(ref=ref, path=img_path, width=int(w) if w and w > 0 else None,
                                     height=int(h) if h and h > 0 else None, metadata=meta,
                                     source=rel))
        for i, obj in enumerate(root.findall("object"), start=1):
            where = f"object {i}"
            label = _text(obj, "name")
            if not label:
                ds.problem(rel, where, "<name> is missing")
                continue
            bnd = obj.find("bndbox")
            if bnd is None:
                ds.problem(rel, where, "<bndbox> is missing")
                continue
            vals = [safe_float(_text(bnd, k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            if any(v is None for v in vals):
                ds.problem(rel, where, "bndbox needs numeric xmin, ymin, xmax, ymax")
                continue
            x1, y1, x2, y2 = vals  # type: ignore[misc]
            attrs: dict[str, Any] = {}
            for flag in FLAGS:
                val = _text(obj, flag)
                if val is not None:
                    attrs[flag] = int(val in ("1", "true", "True"))
            if _text(obj, "pose") and _text(obj, "pose") != "Unspecified":
                attrs["pose"] = _text(obj, "pose")
            score = _text(obj, "score")
            status = _text(obj, "status")
            if status not in ("predicted", "validated", "dubious", "rejected"):
                status = "predicted" if score is not None else "validated"
            aphia = _text(obj, "aphia_id")
            if aphia and aphia.isdigit():
                ds.ensure_label(label, aphia_id=int(aphia))
            else:
                ds.ensure_label(label)
            if score is not None and safe_float(score) is None:
                ds.problem(rel, where, f"score {score!r} is not a number")
                continue
            ds.annotations.append(AnnotationRecord(
                image_ref=ref, label=label, geometry_type="box", geometry=[x1, y1, x2 - x1, y2 - y1],
                score=safe_float(score) if score is not None else None, status=status,
                attributes=attrs, file=rel, location=where))

    def write(self, dataset: Dataset, dest: Path, options: dict[str, Any] | None = None) -> Path:
        options = options or {}
        dest = Path(dest)
        (dest / "Annotations").mkdir(parents=True, exist_ok=True)
        labels = {lab.name: lab for lab in dataset.used_labels()}
        by_image = dataset.annotations_by_image(lambda a: a.geometry_type == "box" and bool(a.label))
        names = dataset.file_names()
        for img, name in zip(dataset.images, names):
            root = ET.Element("annotation")
            ET.SubElement(root, "folder").text = "JPEGImages"
            ET.SubElement(root, "filename").text = name
            size = ET.SubElement(root, "size")
            ET.SubElement(size, "width").text = str(img.width or 0)
            ET.SubElement(size, "height").text = str(img.height or 0)
            ET.SubElement(size, "depth").text = "3"
            ET.SubElement(root, "segmented").text = "0"
            for ann in by_image.get(img.ref, []):
                obj = ET.SubElement(root, "object")
                ET.SubElement(obj, "name").text = ann.label
                ET.SubElement(obj, "pose").text = str(ann.attributes.get("pose", "Unspecified"))
                for flag in FLAGS:
                    ET.SubElement(obj, flag).text = str(int(bool(ann.attributes.get(flag, 0))))
                x, y, w, h = ann.geometry
                bnd = ET.SubElement(obj, "bndbox")
                for tag, val in (("xmin", x), ("ymin", y), ("xmax", x + w), ("ymax", y + h)):
                    ET.SubElement(bnd, tag).text = f"{val:.10g}"
                if ann.score is not None:
                    ET.SubElement(obj, "score").text = repr(float(ann.score))
                ET.SubElement(obj, "status").text = ann.status
                lab = labels.get(ann.label)
                if lab is not None and lab.aphia_id is not None:
                    ET.SubElement(obj, "aphia_id").text = str(lab.aphia_id)
            ET.indent(root)
            stem = name.rsplit(".", 1)[0]
            ET.ElementTree(root).write(dest / "Annotations" / f"{stem}.xml", encoding="utf-8",
                                       xml_declaration=True)
            if options.get("include_images", True) and img.path is not None:
                copy_image(img, dest / "JPEGImages" / name)
        return dest
