"""Content-addressed blob stores (local folder, S3), chosen by the storage URL."""

from __future__ import annotations

from urllib.parse import urlparse

from aqualens.core.config import Settings
from aqualens.core.plugins import get_registry
from aqualens.storage.base import BlobStore

_stores: dict[str, BlobStore] = {}


def open_store(settings: Settings) -> BlobStore:
    """The blob store for ``settings.blob_url`` (cached per URL), through the storage registry."""
    url = settings.blob_url
    if url not in _stores:
        scheme = urlparse(url).scheme
        cls = get_registry().get("aqualens.storage", scheme)
        _stores[url] = cls.from_url(url, settings)
    return _stores[url]


def forget_stores() -> None:
    """Drop cached stores (tests)."""
    _stores.clear()


__all__ = ["BlobStore", "open_store", "forget_stores"]
