"""REST twins of ``aqualens import`` / ``export`` / ``formats`` / ``labels import-taxa``.

- ``GET  /api/v1/formats``: the installed format plugins.
- ``POST /api/v1/imports`` (multipart): ``file`` (an annotation file, or a zip with images),
  ``format``, ``collection``, ``partial``, ``on_outside``, ``unknown_labels``, ``status``,
  ``options`` (JSON object of format options). 200 with the report; 422 with the report in
  ``details`` when the import is refused (nothing stored) or the file cannot be read.
- ``GET  /api/v1/exports?format=F&collection=C`` (or search filters instead of ``collection``,
  plus ``status`` repeated): a zip download.
- ``POST /api/v1/labels/taxa`` (multipart ``file``): a taxon list CSV into the vocabulary.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from aqualens.api.deps import current_user, get_ctx, get_session
from aqualens.catalog.context import Context
from aqualens.catalog.tables import User
from aqualens.core.errors import FormatError, TooLarge, ValidationError

router = APIRouter(prefix="/api/v1", tags=["interchange"])
CHUNK = 1 << 20


def _save_upload(up: UploadFile, folder: Path, limit: int) -> Path:
    """Stream an upload to ``folder`` under a safe name; TooLarge past ``limit`` bytes."""
    name = Path((up.filename or "upload").replace("\\", "/")).name or "upload"
    name = "".join(c if c.isalnum() or c in "-_.() " else "_" for c in name).lstrip(".") or "upload"
    dest = folder / name
    size = 0
    with open(dest, "wb") as out:
        while chunk := up.file.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"upload is larger than {limit} bytes", field="file",
                               valid=f"at most {limit} bytes (AQUALENS_LIMITS__MAX_FILE_BYTES)")
            out.write(chunk)
    if size == 0:
        raise ValidationError("the uploaded file is empty", field="file")
    return dest


def _json_options(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ValidationError("options must be a JSON object", field="options",
                              valid='{"suffix": "aphia"}')
    return data


@router.get("/formats")
def list_formats() -> list[dict[str, Any]]:
    """Installed annotation formats (plugins in ``aqualens.formats``)."""
    from aqualens.formats import format_names, get_format

    out = []
    for name in format_names():
        plugin = get_format(name)
        out.append({"name": name, "description": plugin.description,
                    "geometries": list(plugin.geometries), "output": plugin.default_output})
    return out


@router.post("/imports")
def import_upload(file: UploadFile = File(..., description="Annotation file or zip."),
                  format: str = Form(..., description="Format name (GET /api/v1/formats)."),
                  collection: str = Form(..., description="Target collection name."),
                  partial: bool = Form(False), on_outside: str = Form("clip"),
                  unknown_labels: str = Form("create"), status: str | None = Form(None),
                  public: bool = Form(False), options: str | None = Form(None),
                  ctx: Context = Depends(get_ctx),
                  session: Session = Depends(get_session),
                  user: User = Depends(current_user)) -> dict[str, Any]:
    """Upload and import; all or nothing unless ``partial``. Answers the import report."""
    from aqualens.formats import get_format
    from aqualens.interchange.importer import ImportOptions, import_annotations

    session.commit()  # release SQLite's write lock (token last-used): the import writes itself
    get_format(format)  # unknown format: 404 naming the valid ones, before reading the upload
    opts = ImportOptions(partial=partial, on_outside=on_outside, unknown_labels=unknown_labels,
                         status=status or None, visibility="public" if public else "private",
                         format_options=_json_options(options))
    opts.check()
    with tempfile.TemporaryDirectory(prefix="aqualens-upload-") as tmp:
        path = _save_upload(file, Path(tmp), ctx.settings.limits.max_file_bytes)
        if "gt" in opts.format_options:
            raise ValidationError("option gt is not available over the API: upload a zip with "
                                  "the instances JSON and a results*.json", field="options")
        report = import_annotations(ctx, format, path, collection=collection, user=user,
                                    options=opts)
    if report.refused:
        raise FormatError(report.summary(), field=(report.errors[0].file if report.errors
                                                   else "file"), details=report.to_dict())
    return report.to_dict()


@router.get("/exports")
def export_download(request: Request, format: str = Query(..., description="Format name."),
                    collection: str | None = Query(None, description="Collection id or name."),
                    status: list[str] = Query([], description="Annotation statuses (repeat)."),
                    ctx: Context = Depends(get_ctx),
                    session: Session = Depends(get_session),
                    user: User = Depends(current_user)) -> FileResponse:
    """Export a collection (or the images matching search filters) as a zip download."""
    from aqualens.formats import get_format
    from aqualens.interchange.exporter import export_dataset

    session.commit()  # release SQLite's write lock (token last-used) before the export reads
    get_format(format)
    extra = {k: v for k, v in request.query_params.items()
             if k not in ("format", "collection", "status", "option")}
    options = {}
    for item in request.query_params.getlist("option"):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValidationError(f"option {item!r} must be key=value", field="option")
        options[key] = value
    query = None
    if extra:
        from aqualens.catalog.search import ImageQuery

        if collection is not None:
            extra["collection"] = collection
        query = ImageQuery.parse(extra)
        collection = None
    elif collection is None:
        raise ValidationError("export needs a collection or search filters", field="collection")
    for st in status:
        if st not in ("predicted", "validated", "dubious", "rejected"):
            raise ValidationError(f"unknown status {st!r}", field="status",
                                  valid="predicted, validated, dubious, rejected")
    tmp = Path(tempfile.mkdtemp(prefix="aqualens-dl-"))
    try:
        name = f"{format}-{collection or 'query'}.zip".replace("/", "_")
        result = export_dataset(ctx, format, tmp / name, user=user, collection=collection,
                                query=query, statuses=tuple(status) or None, options=options)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    headers = {"X-AquaLens-Images": str(result.images),
               "X-AquaLens-Annotations": str(result.annotations)}
    return FileResponse(result.path, media_type="application/zip", filename=name,
                        headers=headers,
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


@router.post("/labels/taxa")
def import_taxa_upload(file: UploadFile = File(..., description="Taxon list CSV."),
                       ctx: Context = Depends(get_ctx),
                       session: Session = Depends(get_session),
                       user: User = Depends(current_user)) -> dict[str, Any]:
    """Import a taxon list (name, aphia_id, rank, parent, synonyms) into the vocabulary."""
    from aqualens.interchange.vocabulary import import_taxa

    session.commit()  # release SQLite's write lock (token last-used) before writing labels
    with tempfile.TemporaryDirectory(prefix="aqualens-upload-") as tmp:
        path = _save_upload(file, Path(tmp), 64 * 1024 * 1024)
        if zipfile.is_zipfile(path):
            raise ValidationError("expected a CSV file, got a zip", field="file")
        with ctx.session() as s:
            return import_taxa(s, path).to_dict()
