"""Request and response models of the catalogue routes (they make /docs useful)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Visibility = Literal["private", "public"]
Status = Literal["predicted", "validated", "dubious", "rejected"]
GeometryType = Literal["none", "box", "polygon", "mask", "point"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectionOut(BaseModel):
    id: int
    name: str
    description: str = ""
    owner_id: int
    visibility: Visibility
    meta: dict[str, Any] = {}
    image_count: int | None = Field(None, description="Number of images linked.")
    created_at: datetime | None = None


class CollectionCreate(_In):
    name: str = Field(..., description="1-200 printable characters, no '/'; unique per owner.",
                      examples=["cruise42"])
    description: str = ""
    visibility: Visibility = "private"
    meta: dict[str, Any] = {}


class CollectionPatch(_In):
    name: str | None = None
    description: str | None = None
    visibility: Visibility | None = None
    meta: dict[str, Any] | None = None


class DeleteOut(BaseModel):
    id: int
    deleted: bool = True
    details: dict[str, Any] = {}


class ImageOut(BaseModel):
    id: int
    pid: str = Field(..., description="Persistent id: sha256:<hex>.")
    sha256: str
    size: int
    width: int
    height: int
    format: str
    owner_id: int
    visibility: Visibility
    tier: str
    captured_at: datetime | None = None
    lat: float | None = None
    lon: float | None = None
    depth: float | None = None
    instrument: str | None = None
    station: str | None = None
    meta: dict[str, Any] = {}
    original_name: str | None = None
    source_url: str | None = None
    has_thumbnail: bool = False
    created_at: datetime | None = None
    file_url: str | None = None
    thumbnail_url: str | None = None


class ImageDetail(ImageOut):
    collections: list[CollectionOut] = []


class ImagePatch(_In):
    captured_at: datetime | None = None
    lat: float | None = Field(None, description="-90..90")
    lon: float | None = Field(None, description="-180..180")
    depth: float | None = Field(None, description="Metres, positive down.")
    instrument: str | None = None
    station: str | None = None
    meta: dict[str, Any] | None = None
    visibility: Visibility | None = None


class SearchPage(BaseModel):
    items: list[ImageOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; "
                                                      "null on the last page.")
    total: int | None = Field(None, description="All matches; only with `with_total=true`.")


class FacetValue(BaseModel):
    value: str
    count: int
    id: int | None = None
    aphia_id: int | None = None


class FacetsOut(BaseModel):
    label: list[FacetValue]
    collection: list[FacetValue]
    instrument: list[FacetValue]


class AnnotationOut(BaseModel):
    id: int
    image_id: int
    label_id: int | None
    label: str | None
    geometry_type: GeometryType
    geometry: Any = None
    score: float | None
    status: Status
    source: Literal["human", "import", "model"]
    author_id: int | None
    owner_id: int
    model_id: int | None
    job_id: str | None
    visibility: Visibility
    attributes: dict[str, Any] = {}
    supersedes_id: int | None
    is_current: bool
    created_at: datetime | None


class AnnotationCreate(_In):
    label: str | None = Field(None, description="Label name or synonym (or give label_id).",
                              examples=["Copepoda"])
    label_id: int | None = None
    geometry_type: GeometryType = "none"
    geometry: Any = Field(None, description="box [x,y,w,h]; point [x,y]; polygon "
                          "[[x0,y0,x1,y1,...],...]; mask COCO RLE {size,counts}.")
    score: float | None = Field(None, description="0..1")
    status: Status = "validated"
    attributes: dict[str, Any] = {}
    visibility: Visibility | None = None


class AnnotationPatch(_In):
    """A correction: the current annotation is superseded by a copy with these changes."""

    label: str | None = None
    label_id: int | None = None
    geometry_type: GeometryType | None = None
    geometry: Any = None
    score: float | None = None
    status: Status | None = None
    attributes: dict[str, Any] | None = None
    visibility: Visibility | None = None


class LabelOut(BaseModel):
    id: int
    name: str
    aphia_id: int | None
    rank: str | None
    parent_id: int | None
    vocabulary_uri: str | None
    supercategory: str | None
    synonyms: list[str] = []
    annotation_count: int | None = None


class LabelCreate(_In):
    name: str = Field(..., examples=["Calanus finmarchicus"])
    aphia_id: int | None = Field(None, description="WoRMS AphiaID.", examples=[104464])
    rank: str | None = Field(None, examples=["Species"])
    parent: int | str | None = Field(None, description="Parent label id or name.")
    vocabulary_uri: str | None = None
    supercategory: str | None = None
    synonyms: list[str] = []


class LabelPatch(_In):
    name: str | None = None
    aphia_id: int | None = None
    rank: str | None = None
    parent: int | str | None = None
    vocabulary_uri: str | None = None
    supercategory: str | None = None
