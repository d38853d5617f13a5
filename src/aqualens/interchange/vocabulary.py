"""The label vocabulary: resolving names on import, and taxon lists from CSV.

Resolution (``unknown_labels`` policy of an import):

- every mode first matches an existing label name exactly, then a synonym (``LabelSynonym``);
- ``create`` (default): a name that still matches nothing becomes a new label;
- ``map``: also tries a case- and space-insensitive match and, for EcoTaxa ``A<B`` names, the
  leaf ``A``; a name that still matches nothing is an error;
- ``reject``: a name that matches no label or synonym exactly is an error.

Taxon list CSV (``aqualens labels import-taxa``): header with ``name`` (required), ``aphia_id``
(or ``AphiaID``), ``rank``, ``parent`` (a name in the file or already stored), ``synonyms``
(separated by ``;`` or ``|``), ``supercategory``. All-or-nothing: one bad row refuses the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aqualens.catalog.tables import Label, LabelSynonym
from aqualens.core.errors import FormatError, ValidationError
from aqualens.formats.base import LabelRecord, Problem, read_text

MODES = ("create", "map", "reject")


def _norm(name: str) -> str:
    return " ".join(name.split()).casefold()


class LabelResolver:
    """Resolves label names against the catalogue, caching every lookup for one import."""

    def __init__(self, session: Session, mode: str = "create") -> None:
        if mode not in MODES:
            raise ValidationError(f"unknown labels policy {mode!r}", field="unknown_labels",
                                  valid=", ".join(MODES))
        self.session = session
        self.mode = mode
        self._by_name = {lab.name: lab for lab in session.scalars(select(Label))}
        self._syn = {s.synonym: s.label_id for s in session.scalars(select(LabelSynonym))}
        self._by_id = {lab.id: lab for lab in self._by_name.values()}
        self._loose = {_norm(n): lab for n, lab in self._by_name.items()}

    def resolve(self, name: str) -> Label | None:
        """The existing label for ``name`` under this policy, or None."""
        if name in self._by_name:
            return self._by_name[name]
        if name in self._syn:
            return self._by_id.get(self._syn[name])
        if self.mode == "map":
            for cand in (name, name.split("<", 1)[0]):
                hit = self._loose.get(_norm(cand))
                if hit is not None:
                    return hit
                if cand.strip() in self._syn:
                    return self._by_id.get(self._syn[cand.strip()])
        return None

    def label_for(self, rec: LabelRecord) -> tuple[Label | None, bool, str | None]:
        """``(label, created, warning)``; creates the label only in ``create`` mode."""
        hit = self.resolve(rec.name)
        if hit is not None:
            warning = None
            if rec.aphia_id is not None:
                if hit.aphia_id is None:
                    hit.aphia_id = rec.aphia_id
                elif hit.aphia_id != rec.aphia_id:
                    warning = (f"label {rec.name!r} has AphiaID {hit.aphia_id} in the catalogue "
                               f"but {rec.aphia_id} in the file: the catalogue's is kept")
            if rec.supercategory and not hit.supercategory:
                hit.supercategory = rec.supercategory
            return hit, False, warning
        if self.mode != "create":
            return None, False, None
        parent = self._by_name.get(rec.parent) if rec.parent else None
        lab = Label(name=rec.name[:300], aphia_id=rec.aphia_id, supercategory=rec.supercategory,
                    rank=rec.rank, parent_id=parent.id if parent is not None else None)
        self.session.add(lab)
        self.session.flush()
        self._by_name[lab.name] = lab
        self._by_id[lab.id] = lab
        self._loose[_norm(lab.name)] = lab
        return lab, True, None


@dataclass
class TaxaReport:
    created: int = 0
    updated: int = 0
    synonyms: int = 0
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"created": self.created, "updated": self.updated, "synonyms": self.synonyms,
                "problems": [p.to_dict() for p in self.problems]}


def import_taxa(session: Session, path: Path) -> TaxaReport:
    """Import a taxon list CSV into Label/LabelSynonym; raises FormatError listing every bad row."""
    rel = Path(path).name
    text = read_text(Path(path), encodings=("utf-8-sig", "latin-1"), rel=rel)
    sample = text[:4096]
    delim = "\t" if sample.count("\t") > sample.count(",") else ","
    reader = csv.reader(text.splitlines(), delimiter=delim)
    try:
        rows = list(reader)
    except csv.Error as exc:  # e.g. a field over csv's 128 KiB limit
        raise FormatError(f"{rel} line {reader.line_num}: {exc}", field=f"{rel}:{reader.line_num}",
                          valid="a CSV/TSV taxon list with name[,aphia_id,...] columns") from None
    if not rows:
        raise FormatError(f"{rel} is empty", field=rel, valid="a header with name[,aphia_id,...]")
    head = [h.strip().lower().replace(" ", "_") for h in rows[0]]
    alias = {"aphiaid": "aphia_id", "scientificname": "name", "taxon": "name",
             "parent_name": "parent", "synonym": "synonyms", "taxonrank": "rank"}
    head = [alias.get(h, h) for h in head]
    if "name" not in head:
        raise FormatError(f"{rel}: no 'name' column", field=f"{rel}:1",
                          valid="name, aphia_id, rank, parent, synonyms, supercategory")
    report = TaxaReport()
    entries: list[tuple[int, dict[str, str]]] = []
    names: set[str] = set()
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        rec = {k: (row[i].strip() if i < len(row) else "") for i, k in enumerate(head)}
        where = f"line {n}"
        if not rec["name"]:
            report.problems.append(Problem(rel, where, "name is empty"))
            continue
        if rec.get("aphia_id") and not rec["aphia_id"].isdigit():
            rec_aphia = rec["aphia_id"]
            if rec_aphia.startswith("urn:lsid:marinespecies.org:taxname:"):
                rec["aphia_id"] = rec_aphia.rsplit(":", 1)[1]
            if not rec["aphia_id"].isdigit():
                report.problems.append(Problem(rel, where, f"aphia_id {rec_aphia!r} is not an "
                                               "integer"))
                continue
        if rec["name"] in names:
            report.problems.append(Problem(rel, where, f"name {rec['name']!r} appears twice"))
            continue
        names.add(rec["name"])
        entries.append((n, rec))
    existing = {lab.name: lab for lab in session.scalars(select(Label))}
    syn_rows = {s.synonym: s for s in session.scalars(select(LabelSynonym))}
    for n, rec in entries:
        if rec.get("parent") and rec["parent"] not in names and rec["parent"] not in existing:
            report.problems.append(Problem(rel, f"line {n}", f"parent {rec['parent']!r} is "
                                           "neither in the file nor a stored label"))
    if report.problems:
        raise FormatError(f"{rel}: {len(report.problems)} bad rows; nothing imported: "
                          + "; ".join(f"{p.location}: {p.reason}" for p in report.problems[:10]),
                          field=f"{rel}:{report.problems[0].location}",
                          details=[p.to_dict() for p in report.problems])
    for n, rec in entries:
        lab = existing.get(rec["name"])
        aphia = int(rec["aphia_id"]) if rec.get("aphia_id") else None
        if lab is None:
            lab = Label(name=rec["name"], aphia_id=aphia, rank=rec.get("rank") or None,
                        supercategory=rec.get("supercategory") or None)
            session.add(lab)
            existing[lab.name] = lab
            report.created += 1
        else:
            lab.aphia_id = aphia if aphia is not None else lab.aphia_id
            lab.rank = rec.get("rank") or lab.rank
            lab.supercategory = rec.get("supercategory") or lab.supercategory
            report.updated += 1
    session.flush()
    for n, rec in entries:
        lab = existing[rec["name"]]
        if rec.get("parent"):
            lab.parent_id = existing[rec["parent"]].id
        for syn in [s.strip() for s in rec.get("synonyms", "").replace("|", ";").split(";")]:
            if not syn or syn == lab.name:
                continue
            if syn in existing:
                raise FormatError(f"{rel} line {n}: synonym {syn!r} is itself a label name",
                                  field=f"{rel}:line {n}")
            row = syn_rows.get(syn)
            if row is None:
                row = LabelSynonym(synonym=syn, label_id=lab.id)
                session.add(row)
                syn_rows[syn] = row
                report.synonyms += 1
            elif row.label_id != lab.id:
                raise FormatError(f"{rel} line {n}: synonym {syn!r} already maps to another "
                                  "label", field=f"{rel}:line {n}")
    session.flush()
    return report
