"""Test helpers for the processing engine: tiny catalogue images without the ingest pipeline."""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image as PILImage

from aqualens.catalog.context import Context
from aqualens.catalog.tables import CollectionImage, Image
from aqualens.catalog.users import get_admin


def png_bytes(value: int, size: int = 8) -> bytes:
    """A small grey PNG of brightness ``value``."""
    buf = io.BytesIO()
    PILImage.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def add_images(ctx: Context, values: list[int], collection: str = "cam1",
               missing_blob: tuple[int, ...] = ()) -> tuple[int, list[int]]:
    """Store grey images (brightness ``values``) in a collection of the admin; returns
    (collection id, image ids). Indexes in ``missing_blob`` get a catalogue row but no blob."""
    from aqualens.catalog.collections import get_or_create_collection

    ids = []
    with ctx.session() as s:
        admin = get_admin(s)
        coll = get_or_create_collection(s, collection, admin)
        for n, value in enumerate(values):
            data = png_bytes(value, 8 + n % 5)
            if n in missing_blob:
                import hashlib

                sha = hashlib.sha256(data + b"missing").hexdigest()
            else:
                sha = ctx.store.put_bytes(data)
            img = s.query(Image).filter_by(sha256=sha).one_or_none()
            if img is None:
                img = Image(sha256=sha, size=len(data), width=8, height=8, format="png",
                            owner_id=admin.id, original_name=f"img{n}.png")
                s.add(img)
                s.flush()
            s.merge(CollectionImage(collection_id=coll.id, image_id=img.id))
            ids.append(img.id)
        return coll.id, ids


def admin_id(ctx: Context) -> int:
    with ctx.session() as s:
        return get_admin(s).id


def wait_state(ctx: Context, job_id: str, states: tuple[str, ...], timeout: float = 60) -> dict:
    """Poll until the job reaches one of ``states``; returns its dict."""
    from aqualens.catalog.tables import Job
    from aqualens.processing.jobs import job_to_dict

    deadline = time.monotonic() + timeout
    while True:
        with ctx.session() as s:
            job = s.get(Job, job_id)
            if job.state in states:
                return job_to_dict(job)
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.state} after {timeout}s")
        time.sleep(0.05)


def export_brightness_classifier(folder, scale: float = 20.0):
    """A tiny torch classifier exported to ONNX: "bright" when mean pixel > 0.5 (x ``scale``
    sharpness; a small scale makes a second, softer "version")."""
    from pathlib import Path

    import torch

    class Net(torch.nn.Module):
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3)).unsqueeze(1) - 0.5
            return torch.cat([-scale * m, scale * m], dim=1)

    path = Path(folder) / f"bright-{scale}.onnx"
    x = torch.rand(2, 3, 16, 16)
    torch.onnx.export(Net().eval(), x, str(path), input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    return path


def register_brightness_model(ctx, folder, version: str = "1.0.0", scale: float = 20.0,
                              threshold_shift: float = 0.0) -> int:
    """Register the brightness classifier as ``bright@version``; returns its model id."""
    from aqualens.models.base import ModelInfo
    from aqualens.models.registry import register_model

    path = export_brightness_classifier(folder, scale)
    info = ModelInfo(name="bright", version=version, task="classify",
                     labels=[{"name": "dark"}, {"name": "bright", "aphia_id": None}],
                     input_spec={"height": 16, "width": 16, "channels": 3,
                                 "mean": [threshold_shift], "std": [1.0]})
    with ctx.session() as s:
        return register_model(s, ctx.store, path, info, admin_id(ctx)).id
