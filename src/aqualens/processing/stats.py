"""Built-in job kind ``image-stats``: per-image brightness and colour statistics.

Useful on its own (find over/under-exposed camera frames, drift in illumination over a
deployment) and the simplest complete example of a batch kind. Parameters: a selection
(``image_ids`` / ``collection`` / ``query``, see :mod:`aqualens.processing.selection`) and an
optional ``batch_size``. Each result payload: ``{"mean", "std", "mean_rgb", "width", "height"}``
with brightness on 0-255 (ITU-R 601 luma).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from sqlalchemy import select

from aqualens.catalog.tables import Image
from aqualens.processing.kinds import BatchJobKind


def load_rgb(ctx, sha: str) -> np.ndarray:
    """Decode a stored image to an RGB uint8 array (local path when the store has one)."""
    from PIL import Image as PILImage

    path = ctx.store.local_path(sha)
    source = str(path) if path is not None else io.BytesIO(ctx.store.get_bytes(sha))
    with PILImage.open(source) as im:
        return np.asarray(im.convert("RGB"))


def image_shas(ctx, image_ids: list[int]) -> dict[int, str]:
    with ctx.session() as s:
        return dict(s.execute(select(Image.id, Image.sha256).where(Image.id.in_(image_ids))).all())


def stats_of(rgb: np.ndarray) -> dict[str, Any]:
    """Brightness (mean, std of ITU-R 601 luma) and mean colour of an RGB array."""
    rgb = rgb.astype(np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return {"mean": round(float(luma.mean()), 3), "std": round(float(luma.std()), 3),
            "mean_rgb": [round(float(v), 3) for v in rgb.reshape(-1, 3).mean(axis=0)],
            "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}


class ImageStatsKind(BatchJobKind):
    """Mean brightness, contrast and mean colour per image."""

    batch_size = 64
    usage_kind = "image-stats"

    def validate(self, session, params: dict, owner_id: int) -> dict:
        from aqualens.processing.selection import check_selection

        check_selection(params)
        return params

    def process_batch(self, ctx, job_id: str, params: dict,
                      image_ids: list[int]) -> list[dict[str, Any]]:
        shas = image_shas(ctx, image_ids)
        out = []
        for image_id in image_ids:
            try:
                if image_id not in shas:
                    raise LookupError("image no longer in the catalogue")
                out.append({"image_id": image_id, "ok": True,
                            "payload": stats_of(load_rgb(ctx, shas[image_id]))})
            except Exception as exc:  # noqa: BLE001 - a per-image failure, recorded with reason
                out.append({"image_id": image_id, "ok": False,
                            "error": f"{type(exc).__name__}: {exc}"})
        return out

    def process_arrays(self, arrays: list[np.ndarray], params: dict) -> list[dict[str, Any]]:
        """The same statistics on decoded images (synchronous service runs)."""
        return [stats_of(a) for a in arrays]

    def finish(self, ctx, job) -> dict[str, Any]:
        from aqualens.catalog.tables import JobResult

        with ctx.session() as s:
            means = [p["mean"] for p in s.scalars(
                select(JobResult.payload).where(JobResult.job_id == job.id,
                                                JobResult.ok.is_(True))) if p and "mean" in p]
        if not means:
            return {"images": 0}
        return {"images": len(means), "mean_brightness": round(float(np.mean(means)), 3),
                "min_brightness": float(np.min(means)), "max_brightness": float(np.max(means))}
