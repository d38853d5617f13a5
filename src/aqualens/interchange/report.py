"""The import report: counts plus every problem with its file, line/object and reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aqualens.formats.base import Problem


@dataclass
class ImportReport:
    """What an import did (or would have done, when refused)."""

    format: str
    source: str
    collection: str | None = None
    collection_id: int | None = None
    partial: bool = False
    refused: bool = False
    images_added: int = 0          # new content stored by this import
    images_linked: int = 0         # images added to the collection (new or already stored)
    images_existing: int = 0       # already in the collection
    annotations_added: int = 0
    annotations_skipped: int = 0   # invalid or duplicate records left out
    labels_created: list[str] = field(default_factory=list)
    annotation_only: int = 0       # records kept without an image (URL-only references)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    def add(self, file: str, location: Any, reason: str, severity: str = "error") -> None:
        self.problems.append(Problem(file, None if location is None else str(location), reason,
                                     severity))

    def summary(self) -> str:
        if self.refused:
            head = (f"import refused: {len(self.errors)} errors, nothing stored "
                    "(fix them, or use --partial to import the valid records)")
        else:
            head = (f"imported {self.annotations_added} annotations on "
                    f"{self.images_linked + self.images_existing} images into "
                    f"{self.collection!r} ({self.images_added} new images, {self.images_linked} "
                    f"added to the collection, {len(self.labels_created)} new labels)")
            if self.annotations_skipped:
                head += f"; {self.annotations_skipped} records left out"
            if self.annotation_only:
                head += f"; {self.annotation_only} annotation-only records kept"
        return head + (f"; {len(self.warnings)} warnings" if self.warnings else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "source": self.source, "collection": self.collection,
            "collection_id": self.collection_id, "partial": self.partial,
            "refused": self.refused, "images_added": self.images_added,
            "images_linked": self.images_linked, "images_existing": self.images_existing,
            "annotations_added": self.annotations_added,
            "annotations_skipped": self.annotations_skipped,
            "labels_created": self.labels_created, "annotation_only": self.annotation_only,
            "errors": len(self.errors), "warnings": len(self.warnings),
            "problems": [p.to_dict() for p in self.problems], "summary": self.summary(),
            "seconds": round(self.seconds, 3),
        }
