"""Darwin Core Archive: ``occurrence.txt`` + ``meta.xml`` (+ ``eml.xml``), for GBIF and OBIS.

Writing: one occurrence per *validated* annotation (option ``statuses`` widens this) with
occurrenceID, basisOfRecord (``MachineObservation``), scientificName, scientificNameID
(``urn:lsid:marinespecies.org:taxname:<AphiaID>`` when the label has an AphiaID), eventDate,
decimalLatitude, decimalLongitude, minimumDepthInMeters, maximumDepthInMeters, associatedMedia,
occurrenceStatus, identificationVerificationStatus, and the image's ``instrument`` as
``samplingProtocol``. ``associatedMedia`` is ``<media_base_url>/<file>`` when option
``media_base_url`` is given (what GBIF needs), else the relative path ``media/<file>``; the image
files are copied into ``media/`` unless option ``include_images`` is false.

Reading: ``meta.xml`` gives the core file, delimiter, header lines and the column of each term;
without it ``occurrence.txt`` with a header row is read. Each occurrence becomes a whole-image
annotation on its associatedMedia image (a relative path inside the archive, or a URL kept as an
annotation-only image).
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET  # noqa: N817 - writing only

from aqualens.core.errors import FormatError
from aqualens.formats.base import (AnnotationRecord, Dataset, Format, ImageRecord, copy_image,
                                   find_image, opened_source, read_text, safe_float)
from aqualens.formats.voc import parse_xml

DWC = "http://rs.tdwg.org/dwc/terms/"
LSID = "urn:lsid:marinespecies.org:taxname:"
TERMS = ["occurrenceID", "basisOfRecord", "scientificName", "scientificNameID", "eventDate",
         "decimalLatitude", "decimalLongitude", "minimumDepthInMeters", "maximumDepthInMeters",
         "associatedMedia", "occurrenceStatus", "identificationVerificationStatus",
         "samplingProtocol"]
TEXT_NS = "http://rs.tdwg.org/dwc/text/"


class DarwinCoreFormat(Format):
    name = "dwca"
    description = "Darwin Core Archive (occurrence.txt + meta.xml + eml.xml) for GBIF/OBIS"
    geometries = ("none", "box", "polygon", "mask", "point")
    default_output = "zip"

    def detect(self, src: Path) -> bool:
        src = Path(src)
        return src.is_dir() and ((src / "meta.xml").is_file() or (src / "occurrence.txt").is_file())

    # ------------------------------------------------------------------ reading
    def read(self, src: Path, options: dict[str, Any] | None = None) -> Dataset:
        with opened_source(Path(src)) as root:
            if not root.is_dir():
                root_dir, core = root.parent, root
                delim, skip, index = "\t", 1, None
            else:
                root_dir = root
                core, delim, skip, index = self._meta(root)
            return self._read(root_dir, core, delim, skip, index)

    def _meta(self, root: Path) -> tuple[Path, str, int, dict[str, int] | None]:
        meta = root / "meta.xml"
        if not meta.is_file():
            core = root / "occurrence.txt"
            if not core.is_file():
                raise FormatError(f"{root.name}: neither meta.xml nor occurrence.txt found",
                                  field="meta.xml")
            return core, "\t", 1, None
        el = parse_xml(meta, "meta.xml")
        core_el = next((c for c in el if c.tag.endswith("core")), None)
        if core_el is None:
            raise FormatError("meta.xml: no <core> element", field="meta.xml")
        loc = core_el.find(f"{{{TEXT_NS}}}files/{{{TEXT_NS}}}location")
        if loc is None:
            loc = core_el.find("files/location")
        if loc is None or not (loc.text or "").strip():
            raise FormatError("meta.xml: <core><files><location> is missing", field="meta.xml")
        core = find_image(root, loc.text.strip(), ("",))
        if core is None:
            raise FormatError(f"meta.xml names {loc.text.strip()!r}, which is not in the archive",
                              field="meta.xml")
        delim = (core_el.get("fieldsTerminatedBy") or "\\t").encode().decode("unicode_escape")
        try:
            skip = int(core_el.get("ignoreHeaderLines") or 0)
        except ValueError:
            raise FormatError("meta.xml: ignoreHeaderLines must be an integer",
                              field="meta.xml") from None
        index: dict[str, int] = {}
        for f in core_el:
            if f.tag.endswith("field") and f.get("index") is not None and f.get("term"):
                try:
                    index[f.get("term", "").rsplit("/", 1)[-1]] = int(f.get("index", ""))
                except ValueError:
                    raise FormatError(f"meta.xml: field index {f.get('index')!r} is not an "
                                      "integer", field="meta.xml") from None
        if len(delim) != 1:
            raise FormatError(f"meta.xml: unsupported delimiter {delim!r}", field="meta.xml")
        return core, delim, skip, index

    def _read(self, root: Path, core: Path, delim: str, skip: int,
              index: dict[str, int] | None) -> Dataset:
        rel = core.name
        text = read_text(core, encodings=("utf-8-sig",), rel=rel)
        try:
            rows = list(csv.reader(text.splitlines(), delimiter=delim))
        except csv.Error as exc:
            raise FormatError(f"{rel}: {exc}", field=rel) from None
        if index is None:
            if not rows:
                raise FormatError(f"{rel} is empty", field=rel)
            index = {h.strip(): i for i, h in enumerate(rows[0])}
        if "scientificName" not in index:
            raise FormatError(f"{rel}: no scientificName column", field=rel)
        ds = Dataset()
        images: dict[str, ImageRecord] = {}
        for n, row in enumerate(rows[skip:], start=skip + 1):
            if not any(c.strip() for c in row):
                continue

            def get(term: str) -> str:
                i = index.get(term)  # noqa: B023
                return row[i].strip() if i is not None and i < len(row) else ""  # noqa: B023

            where = f"line {n}"
            name = get("scientificName")
            media = get("associatedMedia").split("|")[0].strip()
            if not name:
                ds.problem(rel, where, "scientificName is empty")
                continue
            if not media:
                ds.problem(rel, where, "associatedMedia is empty: no image to attach to")
                continue
            sid = get("scientificNameID")
            aphia = int(sid[len(LSID):]) if sid.startswith(LSID) and sid[len(LSID):].isdigit() \
                else None
            ds.ensure_label(name, aphia_id=aphia)
            if media not in images:
                meta: dict[str, Any] = {}
                for term, key in (("decimalLatitude", "lat"), ("decimalLongitude", "lon"),
                                  ("minimumDepthInMeters", "depth_min"),
                                  ("maximumDepthInMeters", "depth_max")):
                    raw = get(term)
                    if raw:
                        val = safe_float(raw)
                        if val is None:
                            ds.problem(rel, where, f"{term} {raw!r} is not a number")
                            continue
                        meta[key] = val
                if "depth_min" in meta:
                    meta["depth"] = meta["depth_min"]
                if get("eventDate"):
                    meta["captured_at"] = get("eventDate")
                if get("samplingProtocol"):
                    meta["instrument"] = get("samplingProtocol")
                is_url = media.startswith(("http://", "https://"))
                path = None if is_url else find_image(root, media, ("",))
                if not is_url and path is None:
                    ds.problem(rel, where, f"associatedMedia {media!r} is not in the archive")
                    continue
                images[media] = ImageRecord(ref=media, path=path, url=media if is_url else None,
                                            metadata=meta, source=f"{rel}:{n}")
                ds.images.append(images[media])
            status = {"verified": "validated", "validated": "validated", "predicted": "predicted",
                      "dubious": "dubious"}.get(get("identificationVerificationStatus").lower(),
                                                "validated")
            attrs = {"occurrenceID": get("occurrenceID")} if get("occurrenceID") else {}
            ds.annotations.append(AnnotationRecord(image_ref=media, label=name, status=status,
                                                   attributes=attrs, file=rel, location=where))
        return ds

    # ------------------------------------------------------------------ writing
    def write(self, dataset: Dataset, dest: Path, options: dict[str, Any] | None = None) -> Path:
        options = options or {}
        statuses = set(options.get("statuses") or ["validated"])
        base_url = (options.get("media_base_url") or "").rstrip("/")
        include = options.get("include_images", True)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        labels = {lab.name: lab for lab in dataset.used_labels()}
        names = dict(zip([img.ref for img in dataset.images], dataset.file_names()))
        images = {img.ref: img for img in dataset.images}
        rows, copied = [], set()
        for n, ann in enumerate(dataset.annotations, start=1):
            if ann.status not in statuses or not ann.label or ann.image_ref not in images:
                continue
            img = images[ann.image_ref]
            meta = img.metadata
            name = names[img.ref]
            media = f"{base_url}/{name}" if base_url else (img.url if img.path is None and img.url
                                                           else f"media/{name}")
            lab = labels.get(ann.label)
            event = meta.get("captured_at")
            if isinstance(event, datetime):
                event = event.isoformat()
            dmin = meta.get("depth_min", meta.get("depth"))
            dmax = meta.get("depth_max", dmin)
            rows.append({
                "occurrenceID": ann.attributes.get("occurrenceID") or
                f"{dataset.meta.get('name', 'aqualens')}:{Path(name).stem}:{n}",
                "basisOfRecord": "MachineObservation",
                "scientificName": ann.label,
                "scientificNameID": f"{LSID}{lab.aphia_id}" if lab and lab.aphia_id else "",
                "eventDate": event or "",
                "decimalLatitude": meta.get("lat", ""),
                "decimalLongitude": meta.get("lon", ""),
                "minimumDepthInMeters": "" if dmin is None else dmin,
                "maximumDepthInMeters": "" if dmax is None else dmax,
                "associatedMedia": media,
                "occurrenceStatus": "present",
                "identificationVerificationStatus": "verified" if ann.status == "validated"
                else ann.status,
                "samplingProtocol": meta.get("instrument") or "",
            })
            if include and img.path is not None and name not in copied and not base_url:
                copy_image(img, dest / "media" / name)
                copied.add(name)
        with open(dest / "occurrence.txt", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writer.writerow(TERMS)
            for r in rows:
                writer.writerow([str(r[t]).replace("\t", " ").replace("\n", " ") for t in TERMS])
        self._write_meta(dest)
        self._write_eml(dest, dataset, options)
        return dest

    @staticmethod
    def _write_meta(dest: Path) -> None:
        ET.register_namespace("", TEXT_NS)
        arch = ET.Element(f"{{{TEXT_NS}}}archive", {"metadata": "eml.xml"})
        core = ET.SubElement(arch, f"{{{TEXT_NS}}}core", {
            "encoding": "UTF-8", "fieldsTerminatedBy": "\\t", "linesTerminatedBy": "\\n",
            "fieldsEnclosedBy": "", "ignoreHeaderLines": "1",
            "rowType": f"{DWC}Occurrence"})
        files = ET.SubElement(core, f"{{{TEXT_NS}}}files")
        ET.SubElement(files, f"{{{TEXT_NS}}}location").text = "occurrence.txt"
        ET.SubElement(core, f"{{{TEXT_NS}}}id", {"index": "0"})
        for i, term in enumerate(TERMS):
            ET.SubElement(core, f"{{{TEXT_NS}}}field", {"index": str(i), "term": f"{DWC}{term}"})
        ET.indent(arch)
        ET.ElementTree(arch).write(dest / "meta.xml", encoding="utf-8", xml_declaration=True)

    @staticmethod
    def _write_eml(dest: Path, dataset: Dataset, options: dict[str, Any]) -> None:
        ns = "https://eml.ecoinformatics.org/eml-2.2.0"
        ET.register_namespace("eml", ns)
        root = ET.Element(f"{{{ns}}}eml", {"packageId": str(dataset.meta.get("name", "aqualens")),
                                           "system": "AquaLens"})
        ds = ET.SubElement(root, "dataset")
        ET.SubElement(ds, "title").text = str(options.get("title") or dataset.meta.get(
            "description") or f"AquaLens export {dataset.meta.get('name', '')}".strip())
        creator = ET.SubElement(ds, "creator")
        ET.SubElement(creator, "organizationName").text = str(options.get("publisher", "AquaLens"))
        ET.SubElement(ds, "pubDate").text = datetime.now().date().isoformat()
        if options.get("licence"):
            ET.SubElement(ET.SubElement(ds, "intellectualRights"), "para").text = \
                str(options["licence"])
        ET.indent(root)
        ET.ElementTree(root).write(dest / "eml.xml", encoding="utf-8", xml_declaration=True)
