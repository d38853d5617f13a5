"""Built-in job kind ``predict``: run a registered model over catalogue images (reanalysis).

Parameters (JSON)::

    {"model": "fish@2.0.0" | 17,            # resolved to model_id when the job is created
     "collection": "obsea-cam1" | "image_ids": [...] | "query": {...},
     "top_k": 5, "threshold": 0.0, "batch_size": 128, "chunk_size": 512}

Workers load the model once per process through ``aqualens.models.warm.load_runtime`` (an LRU
of warm runtimes). A Dask task carries a chunk of up to ``chunk_size`` image ids; the worker
decodes and predicts it ``batch_size`` images at a time (so at most one batch of decoded images
is in memory). The annotations (status ``predicted``, source ``model``, ``model_id``,
``job_id``) are written in the same transaction as the job's (job, image) result rows, so a
retried or resumed chunk never duplicates them, and the results of different model versions /
runs stay side by side, told apart by ``job_id``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aqualens.catalog.bulk import insert_rows
from aqualens.catalog.tables import Annotation, Image, Label, User, utcnow
from aqualens.core.errors import ValidationError
from aqualens.processing.kinds import BatchJobKind
from aqualens.processing.stats import image_shas


def load_pixels(ctx, sha: str, store: Any = None) -> Any:
    """Decode a stored image with OpenCV (the models' decoder; Pillow for other formats).

    Pass ``store`` (``ctx.store``, opened once per batch) when decoding many: opening the store
    and resolving a blob's path cost more than decoding a vignette.
    """
    from aqualens.models.preprocess import decode_image
    from aqualens.storage.local import LocalBlobStore

    store = store if store is not None else ctx.store
    if isinstance(store, LocalBlobStore):
        with store.open(sha) as f:  # the file where it lies (one open per tier tried)
            data = f.read()
    else:
        data = store.get_bytes(sha)
    return decode_image(data, f"sha256:{sha[:12]}")


def check_predict_params(session: Session, params: dict, owner_id: int) -> dict:
    """Resolve the model (visible to the owner) and check top_k / threshold / selection."""
    from aqualens.models.registry import get_model
    from aqualens.processing.selection import check_selection

    ref = params.get("model_id", params.get("model"))
    if ref in (None, ""):
        raise ValidationError("a model is required", field="model",
                              valid="a model id, name or name@version")
    model = get_model(session, ref, session.get(User, owner_id))
    top_k = params.get("top_k", 5)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 100:
        raise ValidationError(f"top_k must be an integer 1..100, got {top_k!r}", field="top_k")
    threshold = params.get("threshold", 0.0)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) \
            or not 0.0 <= threshold <= 1.0:
        raise ValidationError(f"threshold must be a number 0..1, got {threshold!r}",
                              field="threshold")
    batch = params.get("batch_size", PredictKind.batch_size)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 4096:
        raise ValidationError(f"batch_size must be an integer 1..4096, got {batch!r}",
                              field="batch_size")
    chunk = params.get("chunk_size")
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool)
                              or not 1 <= chunk <= 100_000):
        raise ValidationError(f"chunk_size must be an integer 1..100000 (images per task), "
                              f"got {chunk!r}", field="chunk_size")
    check_selection(params)
    out = dict(params)
    out.update(model_id=model.id, model=f"{model.name}@{model.version}", top_k=top_k,
               threshold=float(threshold), task=model.task)
    return out


def annotations_from_payload(payload: dict) -> list[dict[str, Any]]:
    """Annotation fields (label name, aphia, geometry, score, attributes) for one result."""
    task = payload.get("task")
    out: list[dict[str, Any]] = []
    if task == "classify" and payload.get("top"):
        best = payload["top"][0]
        out.append({"label": best["label"], "aphia_id": best.get("aphia_id"),
                    "geometry_type": "none", "geometry": None, "score": best["score"],
                    "attributes": {"top_k": payload["top"]}})
    elif task == "detect":
        for b in payload.get("boxes", []):
            out.append({"label": b["label"], "aphia_id": b.get("aphia_id"),
                        "geometry_type": "box", "geometry": [b["x"], b["y"], b["w"], b["h"]],
                        "score": b["score"], "attributes": {}})
    elif task == "segment":
        for m in payload.get("masks", []):
            if m.get("rle"):
                gtype, geom = "mask", m["rle"]
            elif m.get("polygon"):
                gtype, geom = "polygon", m["polygon"]
            else:
                gtype, geom = "box", m.get("box")
            out.append({"label": m["label"], "aphia_id": m.get("aphia_id"),
                        "geometry_type": gtype, "geometry": geom, "score": m["score"],
                        "attributes": {"area": m.get("area"), "box": m.get("box")}})
    return out


def write_annotations(session: Session, *, job_id: str | None, model_id: int, owner_id: int,
                      results: list[dict]) -> int:
    """Store the predicted annotations of ``results`` (payloads); returns how many."""
    from aqualens.catalog.annotations import check_geometry
    from aqualens.catalog.labels import get_or_create_label

    items = [(int(r["image_id"]), a) for r in results if r.get("payload")
             for a in annotations_from_payload(r["payload"])]
    if not items:
        return 0
    vis = dict(session.execute(select(Image.id, Image.visibility)
                               .where(Image.id.in_({i for i, _ in items}))).all())
    # The labels of the batch in one query; only names not found as they are (new labels,
    # synonyms, an AphiaID to fill in) go through get_or_create_label one by one.
    wanted = {a["label"]: a["aphia_id"] for _, a in items}
    labels: dict[str, int] = {}
    for lid, name, aphia in session.execute(select(Label.id, Label.name, Label.aphia_id)
                                            .where(Label.name.in_(list(wanted)))):
        if aphia is not None or wanted[name] is None:
            labels[name] = lid
    for name, aphia in wanted.items():
        if name not in labels:
            labels[name] = get_or_create_label(session, name, aphia).id
    now = utcnow()
    rows = [{"image_id": image_id, "label_id": labels[a["label"]],
             "geometry_type": a["geometry_type"],
             "geometry": check_geometry(a["geometry_type"], a["geometry"]),
             "score": float(a["score"]), "status": "predicted", "source": "model",
             "model_id": model_id, "job_id": job_id, "owner_id": owner_id, "author_id": None,
             "attributes": a["attributes"], "visibility": vis.get(image_id, "private"),
             "is_current": True, "supersedes_id": None, "created_at": now}
            for image_id, a in items]
    # One driver executemany instead of one ORM object per annotation (every column is given,
    # so no ORM defaults are needed; see catalog/bulk.py).
    insert_rows(session, Annotation.__table__, rows)
    return len(rows)


def predict_batch(ctx, model_id: int, image_ids: list[int], *, top_k: int = 5,
                  threshold: float = 0.0, batch_size: int | None = None) -> list[dict[str, Any]]:
    """Decode and predict ``image_ids`` with the warm runtime, ``batch_size`` images per model
    call (all at once when None); one result dict per image, in order."""
    from aqualens.models.warm import load_runtime

    runtime = load_runtime(ctx, model_id)
    shas = image_shas(ctx, image_ids)
    store = ctx.store
    out: dict[int, dict[str, Any]] = {}
    step = max(1, batch_size or len(image_ids))
    for start in range(0, len(image_ids), step):
        arrays, ok_ids = [], []
        for image_id in image_ids[start:start + step]:
            try:
                if image_id not in shas:
                    raise LookupError("image no longer in the catalogue")
                arrays.append(load_pixels(ctx, shas[image_id], store))
                ok_ids.append(image_id)
            except Exception as exc:  # noqa: BLE001 - per-image failure with its reason
                out[image_id] = {"image_id": image_id, "ok": False,
                                 "error": f"cannot decode: {type(exc).__name__}: {exc}"}
        if arrays:
            preds = runtime.predict(arrays, top_k=top_k, threshold=threshold)
            for image_id, pred in zip(ok_ids, preds, strict=True):
                out[image_id] = {"image_id": image_id, "ok": True, "payload": pred.to_dict()}
    return [out[i] for i in image_ids]


class PredictKind(BatchJobKind):
    """Run one model over a selection of catalogue images."""

    # Measured in bench/batch_predict.py on UVP6 vignettes: batches of 128 ran 1.45x faster than
    # 32; chunks of 512 images per task pay the task round trip and the storing transaction a
    # quarter as often again, while only one batch of decoded images is in memory at a time.
    batch_size = 128
    chunk_size = 512
    usage_kind = "predict"

    def validate(self, session: Session, params: dict, owner_id: int) -> dict:
        return check_predict_params(session, params, owner_id)

    def process_batch(self, ctx, job_id: str, params: dict,
                      image_ids: list[int]) -> list[dict[str, Any]]:
        return predict_batch(ctx, params["model_id"], image_ids, top_k=params.get("top_k", 5),
                             threshold=params.get("threshold", 0.0),
                             batch_size=params.get("batch_size") or self.batch_size)

    def write(self, session: Session, job_id: str, params: dict, results: list[dict]) -> None:
        from aqualens.catalog.tables import Job

        owner = session.scalar(select(Job.owner_id).where(Job.id == job_id))
        write_annotations(session, job_id=job_id, model_id=params["model_id"], owner_id=owner,
                          results=results)

    def finish(self, ctx, job) -> dict[str, Any]:
        from sqlalchemy import func

        from aqualens.catalog.tables import Label

        with ctx.session() as s:
            counts = dict(s.execute(select(Label.name, func.count(Annotation.id))
                                    .join(Label, Label.id == Annotation.label_id)
                                    .where(Annotation.job_id == job.id)
                                    .group_by(Label.name)).all())
        return {"model_id": job.params.get("model_id"), "model": job.params.get("model"),
                "counts": counts, "annotations": sum(counts.values())}

    def usage_model_id(self, params: dict) -> int | None:
        return params.get("model_id")
