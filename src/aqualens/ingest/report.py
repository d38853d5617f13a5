"""What an ingest answers: accepted images, rejected files with their reason, warnings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Machine-readable rejection codes; the human reason says more (limits, the decoder's words).
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
TOO_MANY_PIXELS = "too_many_pixels"
TOO_LARGE = "too_large"
UNSAFE_PATH = "unsafe_path"
LINK_OR_DEVICE = "link_or_device"
BAD_ARCHIVE = "bad_archive"
UNREADABLE = "unreadable"
STORAGE = "storage"


@dataclass
class IngestedItem:
    """One file that is now in the catalogue.

    ``duplicate``: the same content was already stored (earlier, or earlier in this ingest).
    ``linked``: this ingest added the image to the collection (False when it was there already).
    """

    name: str
    image_id: int
    sha256: str
    width: int
    height: int
    duplicate: bool = False
    linked: bool = True
    size: int = 0


@dataclass
class Rejection:
    """A file that was not ingested: its name, a code and a sentence saying why."""

    name: str
    reason: str
    code: str = NOT_AN_IMAGE


@dataclass
class IngestReport:
    """Outcome of one ingest (also the JSON the CLI writes and the REST upload answers)."""

    collection_id: int | None = None
    collection: str | None = None
    accepted: list[IngestedItem] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metadata_unmatched: int = 0
    seconds: float = 0.0

    @property
    def new_images(self) -> int:
        """Images whose content was not stored before."""
        return sum(1 for a in self.accepted if not a.duplicate)

    @property
    def duplicates(self) -> int:
        return sum(1 for a in self.accepted if a.duplicate)

    @property
    def linked(self) -> int:
        """Images this ingest added to the collection."""
        return sum(1 for a in self.accepted if a.linked)

    @property
    def bytes(self) -> int:
        return sum(a.size for a in self.accepted)

    def reject(self, name: str, reason: str, code: str) -> None:
        self.rejected.append(Rejection(name=name, reason=reason, code=code))

    def summary(self) -> dict[str, Any]:
        return {"accepted": len(self.accepted), "new_images": self.new_images,
                "duplicates": self.duplicates, "added_to_collection": self.linked,
                "rejected": len(self.rejected), "skipped": len(self.skipped),
                "bytes": self.bytes, "seconds": round(self.seconds, 3)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {"collection_id": self.collection_id, "collection": self.collection,
                "summary": self.summary(),
                "accepted": [asdict(a) for a in self.accepted],
                "rejected": [asdict(r) for r in self.rejected],
                "skipped": list(self.skipped), "warnings": list(self.warnings),
                "metadata_unmatched": self.metadata_unmatched}
