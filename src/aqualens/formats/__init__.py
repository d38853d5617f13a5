"""Annotation and metadata readers/writers (pure: files in, neutral records out).

Formats are plugins in the ``aqualens.formats`` entry point group; use :func:`get_format`.
"""

from __future__ import annotations

from aqualens.formats.base import (AnnotationRecord, Dataset, Format, ImageRecord, LabelRecord,
                                   Problem, ReadResult)


def get_format(name: str) -> Format:
    """The format plugin called ``name`` (an instance)."""
    from aqualens.core.plugins import get_registry

    obj = get_registry().get("aqualens.formats", name)
    return obj() if isinstance(obj, type) else obj


def format_names() -> list[str]:
    from aqualens.core.plugins import get_registry

    return get_registry().names("aqualens.formats")


__all__ = ["AnnotationRecord", "Dataset", "Format", "ImageRecord", "LabelRecord", "Problem",
           "ReadResult", "get_format", "format_names"]
