"""Ingestion: walk files, folders and archives, probe each image, store it once, catalogue it.

Public entry points live in :mod:`aqualens.ingest.pipeline` (``ingest_paths``, ``ingest_files``);
listeners for new images in :mod:`aqualens.ingest.hooks`.
"""

from aqualens.ingest.report import IngestedItem, IngestReport, Rejection

__all__ = ["IngestReport", "IngestedItem", "Rejection"]
