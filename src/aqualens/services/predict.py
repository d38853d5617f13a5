"""Prediction use cases: run a registered model on catalogue images (results stored as
annotations), on uploaded images (nothing stored), and the identify pattern.

``predict_images`` is what the processing engine calls per batch for large runs; it is
idempotent per (job, image) when ``job_id`` is given: images that already have a JobResult for
the job are not predicted again, and their stored payload is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from aqualens.catalog.ids import check_id
from aqualens.catalog.tables import Image, JobResult, Model, UsageEvent, User
from aqualens.catalog.users import can_read, visible
from aqualens.core.errors import NotFound, ValidationError
from aqualens.models.base import Result
from aqualens.models.preprocess import decode_image
from aqualens.models.registry import ModelRef

if TYPE_CHECKING:
    from aqualens.catalog.context import Context

MAX_TOP_K = 100


def check_options(top_k: Any, threshold: Any) -> tuple[int, float]:
    """Validate top-k and threshold as they arrive from a request or a command line."""
    try:
        k = int(top_k)
        if str(top_k).strip() != str(k) and not isinstance(top_k, int):
            raise ValueError
    except (TypeError, ValueError):
        raise ValidationError(f"top_k must be an integer, got {top_k!r}", field="top_k",
                              valid=f"1..{MAX_TOP_K}") from None
    if not 1 <= k <= MAX_TOP_K or isinstance(top_k, bool):
        raise ValidationError(f"top_k must be 1..{MAX_TOP_K}, got {top_k!r}", field="top_k")
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValidationError(f"threshold must be a number, got {threshold!r}",
                              field="threshold", valid="0.0 .. 1.0") from None
    if not 0.0 <= t <= 1.0:
        raise ValidationError(f"threshold must be between 0 and 1, got {threshold!r}",
                              field="threshold", valid="0.0 .. 1.0")
    return k, t


def readable_model(session, ref: int | str, user: User | None) -> Model:  # noqa: ANN001
    from aqualens.models.registry import get_model

    return get_model(session, ref, user)


def record_usage(ctx: Context, *, user_id: int | None, images: int, nbytes: int = 0,
                 model_id: int | None = None, job_id: str | None = None,
                 kind: str = "predict", details: dict | None = None,
                 user: User | None = None, buffered: bool = False) -> None:
    """One UsageEvent for ``images`` processed images.

    ``user`` (the caller, already loaded) spares the lookup of its country. ``buffered`` queues
    the event (see :mod:`aqualens.services.usage`: written within a second, or by
    ``flush_usage()``) instead of committing it now; the per-request API paths use it.
    """
    if buffered:
        from aqualens.models.registry import db_url_of
        from aqualens.services.usage import buffer_usage

        if user is None and user_id is not None:
            with ctx.session() as s:
                user = s.get(User, user_id)
        buffer_usage(db_url_of(ctx), user_id=user_id, kind=kind, images=images, nbytes=nbytes,
                     model_id=model_id, job_id=job_id, country=user.country if user else None,
                     details=details)
        return
    with ctx.session() as s:
        country = None
        if user is not None and user.id == user_id:
            country = user.country
        elif user_id is not None:
            u = s.get(User, user_id)
            country = u.country if u else None
        s.add(UsageEvent(user_id=user_id, kind=kind, images=images, bytes=nbytes,
                         model_id=model_id, job_id=job_id, country=country,
                         details=details or {}))


def predict_arrays(ctx: Context, model_id: int | ModelRef, arrays: list[np.ndarray], *,
                   top_k: int = 5, threshold: float = 0.0) -> list[Result]:
    """Run the warm runtime of a model on decoded images (no permission check). With a
    :class:`ModelRef` (already read) the warm runtime is found without touching the catalogue."""
    from aqualens.models.warm import load_runtime, runtime_for

    top_k, threshold = check_options(top_k, threshold)
    runtime = runtime_for(ctx, model_id) if isinstance(model_id, ModelRef) \
        else load_runtime(ctx, model_id)
    return runtime.predict(arrays, top_k=top_k, threshold=threshold)


def predict_uploads(ctx: Context, model_ref: int | str | ModelRef, files: list[tuple[str, bytes]],
                    user: User | None, *, top_k: int = 5, threshold: float = 0.0,
                    details: dict | None = None) -> tuple[ModelRef, list[dict[str, Any]],
                                                          list[np.ndarray]]:
    """Predict uploaded image files (nothing is stored but a usage event).

    Returns (model, one dict per file ``{"file", "width", "height", "result"}``, decoded arrays).
    A file that is not an image is refused with UnsupportedMedia naming it.

    This is the per-request path of the predict APIs, kept lean: one light catalogue read (the
    model and the caller's right to read it, checked as the row is now), the warm runtime from
    the process cache, and a buffered usage event (no commit per request).
    """
    from aqualens.models.registry import resolve_model

    _check_files(files)
    top_k, threshold = check_options(top_k, threshold)
    # A ModelRef comes from resolve_model(ctx, ref, user) in the caller: checked already.
    model = model_ref if isinstance(model_ref, ModelRef) else resolve_model(ctx, model_ref, user)
    arrays = _decode_uploads(ctx, files)
    results = predict_arrays(ctx, model, arrays, top_k=top_k, threshold=threshold)
    return model, _upload_rows(ctx, model, files, arrays, results, user, details), arrays


def _check_files(files: list[tuple[str, bytes]]) -> None:
    if not files:
        raise ValidationError("no image files sent", field="files",
                              valid="one or more multipart 'files' parts")


def _decode_uploads(ctx: Context, files: list[tuple[str, bytes]]) -> list[np.ndarray]:
    """Decoded uploads; UnsupportedMedia / ValidationError name the file that is not usable."""
    arrays = [decode_image(data, name) for name, data in files]
    limit = ctx.settings.limits.max_image_pixels
    for (name, _), a in zip(files, arrays):
        if a.shape[0] * a.shape[1] > limit:
            raise ValidationError(f"{name} has {a.shape[1]}x{a.shape[0]} pixels, more than the "
                                  f"limit of {limit}", field=name)
    return arrays


def _upload_rows(ctx: Context, model: ModelRef, files: list[tuple[str, bytes]],
                 arrays: list[np.ndarray], results: list[Result], user: User | None,
                 details: dict | None) -> list[dict[str, Any]]:
    """The answer rows of uploaded files, after recording their (buffered) usage event."""
    record_usage(ctx, user_id=user.id if user else None, images=len(files),
                 nbytes=sum(len(d) for _, d in files), model_id=model.id, details=details,
                 user=user, buffered=True)
    return [{"file": name, "width": int(a.shape[1]), "height": int(a.shape[0]),
             "result": r.to_dict()} for (name, _), a, r in zip(files, arrays, results)]


@dataclass
class UploadRequest:
    """One predict request waiting in a model's batcher (see :func:`predict_uploads_batched`)."""

    ctx: Context
    model: ModelRef
    files: list[tuple[str, bytes]]
    user: User | None
    top_k: int
    threshold: float
    details: dict | None = None


async def predict_uploads_batched(ctx: Context, model: ModelRef,
                                  files: list[tuple[str, bytes]], user: User | None, *,
                                  top_k: int = 5, threshold: float = 0.0,
                                  details: dict | None = None) -> list[dict[str, Any]]:
    """:func:`predict_uploads` for a server: concurrent requests for the same model are decoded
    and run as one batch in the model's batcher thread (:mod:`aqualens.services.batching`).
    Returns the answer rows; errors are those of :func:`predict_uploads`, per request."""
    from aqualens.models.registry import db_url_of
    from aqualens.services.batching import submit

    _check_files(files)
    top_k, threshold = check_options(top_k, threshold)
    key = ("predict", db_url_of(ctx), model.id, model.artefact_sha256)
    return await submit(key, _run_upload_batch,
                        UploadRequest(ctx, model, files, user, top_k, threshold, details))


def _run_upload_batch(requests: list[UploadRequest]) -> list[Any]:
    """The batcher's handler: decode every request (a bad file fails only its request), run the
    requests that share top-k and threshold as one model call, and split the results again."""
    outcomes: list[Any] = [None] * len(requests)
    decoded: dict[int, list[np.ndarray]] = {}
    for i, r in enumerate(requests):
        try:
            decoded[i] = _decode_uploads(r.ctx, r.files)
        except Exception as exc:  # noqa: BLE001 - raised in that request's caller
            outcomes[i] = exc
    groups: dict[tuple, list[int]] = {}
    for i in decoded:
        groups.setdefault((requests[i].top_k, requests[i].threshold), []).append(i)
    for members in groups.values():
        try:
            _run_group(requests, decoded, members, outcomes)
        except Exception:  # noqa: BLE001 - one request broke the batch: run them one by one
            for i in members:
                try:
                    _run_group(requests, decoded, [i], outcomes)
                except Exception as exc:  # noqa: BLE001
                    outcomes[i] = exc
    return outcomes


def _run_group(requests: list[UploadRequest], decoded: dict[int, list[np.ndarray]],
               members: list[int], outcomes: list[Any]) -> None:
    first = requests[members[0]]
    arrays = [a for i in members for a in decoded[i]]
    results = predict_arrays(first.ctx, first.model, arrays, top_k=first.top_k,
                             threshold=first.threshold)
    at = 0
    for i in members:
        r, n = requests[i], len(decoded[i])
        outcomes[i] = _upload_rows(r.ctx, r.model, r.files, decoded[i], results[at:at + n],
                                   r.user, r.details)
        at += n


def _load_rgb(ctx: Context, sha: str, name: str) -> np.ndarray:
    return decode_image(ctx.store.get_bytes(sha), name)


def predict_images(ctx: Context, model_id: int, image_ids: list[int], *, top_k: int = 5,
                   threshold: float = 0.0, owner_id: int, job_id: str | None = None,
                   store: bool = True) -> list[dict[str, Any]]:
    """Predict catalogue images and store the results as annotations (status ``predicted``,
    source ``model``, ``model_id``, ``job_id``; the top-k list and threshold in attributes).

    Images must be readable by ``owner_id``. With ``job_id`` the call is idempotent per
    (job, image): JobResult rows are written in the same transaction as the annotations and
    images that already have one are skipped (their stored payload is returned).
    Returns one dict per image, in order: ``{"image_id", "ok", "payload" | "error",
    "annotation_ids", "skipped"}``.
    """
    from aqualens.processing.predict import annotations_from_payload

    top_k, threshold = check_options(top_k, threshold)
    ids = [check_id(int(i), "image_ids") for i in image_ids]
    with ctx.session() as s:
        user = s.get(User, owner_id)
        if user is None:
            raise NotFound(f"no user {owner_id}", field="owner_id")
        model = s.get(Model, int(model_id))
        if model is None or not can_read(model, user):
            raise NotFound(f"no model {model_id}", field="model")
        model_ref = f"{model.name}@{model.version}"
        country = user.country
        rows = dict(s.execute(select(Image.id, Image.sha256)
                              .where(Image.id.in_(ids), visible(Image, user))).all())
        # JobResult rows need an existing image (foreign key); unknown ids are only reported.
        existing = set(s.scalars(select(Image.id).where(Image.id.in_(ids))))
        done: dict[int, JobResult] = {}
        if job_id is not None:
            done = {r.image_id: r for r in s.scalars(
                select(JobResult).where(JobResult.job_id == job_id, JobResult.image_id.in_(ids)))}
            for r in done.values():
                s.expunge(r)
    out: dict[int, dict[str, Any]] = {}
    todo, arrays = [], []
    for i in ids:
        if i in done:
            r = done[i]
            out[i] = {"image_id": i, "ok": r.ok, "payload": r.payload, "error": r.error,
                      "annotation_ids": [], "skipped": True}
        elif i not in rows:
            out[i] = {"image_id": i, "ok": False, "error": f"no image {i} (or not readable)",
                      "annotation_ids": [], "skipped": False}
        else:
            try:
                arrays.append(_load_rgb(ctx, rows[i], f"image {i}"))
                todo.append(i)
            except Exception as exc:  # noqa: BLE001 - per-image failure, recorded with reason
                out[i] = {"image_id": i, "ok": False, "annotation_ids": [], "skipped": False,
                          "error": f"cannot decode image {i}: {exc}"}
    results = predict_arrays(ctx, model_id, arrays, top_k=top_k, threshold=threshold) \
        if arrays else []
    for i, res in zip(todo, results):
        out[i] = {"image_id": i, "ok": True, "payload": res.to_dict(), "annotation_ids": [],
                  "skipped": False}
    new = [out[i] for i in ids if not out[i]["skipped"]]
    with ctx.session() as s:
        if store:
            _store(s, new, model_id=int(model_id), owner_id=owner_id, job_id=job_id,
                   model_ref=model_ref, top_k=top_k, threshold=threshold,
                   to_annotations=annotations_from_payload)
        if job_id is not None and new:
            from aqualens.processing.jobs import record_results

            record_results(s, job_id, [{"image_id": r["image_id"], "ok": r["ok"],
                                        "payload": r.get("payload"), "error": r.get("error")}
                                       for r in new if r["image_id"] in existing])
        if todo:  # the usage event commits with the results (one transaction, not two)
            s.add(UsageEvent(user_id=owner_id, kind="predict", images=len(todo), bytes=0,
                             model_id=int(model_id), job_id=job_id, country=country,
                             details={}))
    return [out[i] for i in ids]


def _store(session, results: list[dict], *, model_id: int, owner_id: int,  # noqa: ANN001
           job_id: str | None, model_ref: str, top_k: int, threshold: float,
           to_annotations) -> None:  # noqa: ANN001
    from aqualens.catalog.annotations import add_annotation
    from aqualens.catalog.labels import get_or_create_label

    labels: dict[str, int] = {}
    for r in results:
        if not r["ok"] or not r.get("payload"):
            continue
        for a in to_annotations(r["payload"]):
            if a["label"] not in labels:
                labels[a["label"]] = get_or_create_label(session, a["label"], a["aphia_id"]).id
            attrs = dict(a["attributes"] or {})
            attrs.update(model=model_ref, top_k_setting=top_k, threshold=threshold)
            row = add_annotation(session, r["image_id"], label_id=labels[a["label"]],
                                 geometry_type=a["geometry_type"], geometry=a["geometry"],
                                 score=float(a["score"]), status="predicted", source="model",
                                 author_id=None, owner_id=owner_id, model_id=model_id,
                                 job_id=job_id, attributes=attrs)
            r["annotation_ids"].append(row.id)


def identify_context(lat: float | None = None, lon: float | None = None,
                     date: str | None = None, depth: float | None = None) -> dict[str, Any]:
    """The observation context of an identify request, checked (recorded for priors later)."""
    context: dict[str, Any] = {}
    if lat is not None:
        if not -90 <= lat <= 90:
            raise ValidationError(f"lat {lat} is out of range", field="lat", valid="-90..90")
        context["lat"] = lat
    if lon is not None:
        if not -180 <= lon <= 180:
            raise ValidationError(f"lon {lon} is out of range", field="lon", valid="-180..180")
        context["lon"] = lon
    if (lat is None) != (lon is None):
        raise ValidationError("lat and lon go together", field="lat" if lat is None else "lon")
    if date:
        try:
            context["date"] = datetime.fromisoformat(date.replace("Z", "+00:00")).isoformat()
        except ValueError:
            raise ValidationError(f"date {date!r} is not an ISO 8601 date", field="date",
                                  valid="YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS") from None
    if depth is not None:
        if not -11000 <= depth <= 11000:
            raise ValidationError(f"depth {depth} is out of range", field="depth",
                                  valid="metres, -11000..11000")
        context["depth"] = depth
    return context


def identify_model(model: ModelRef) -> ModelRef:
    """Identify needs a classifier."""
    if model.task != "classify":
        raise ValidationError(f"model {model.name} {model.version} is a {model.task} model; "
                              "identify needs a classifier", field="model")
    return model


def identify_answer(model: ModelRef, row: dict[str, Any], context: dict[str, Any],
                    name: str) -> dict[str, Any]:
    """The identify answer: ranked taxa with AphiaID, WoRMS link, score and model version."""
    top = row["result"]["top"]
    return {"model": {"id": model.id, "name": model.name, "version": model.version,
                      "pid": f"sha256:{model.artefact_sha256}"},
            "results": [{"rank": n + 1, "label": t["label"], "aphia_id": t["aphia_id"],
                         "score": t["score"],
                         "worms_url": (f"https://www.marinespecies.org/aphia.php?p=taxdetails"
                                       f"&id={t['aphia_id']}" if t["aphia_id"] else None)}
                        for n, t in enumerate(top)],
            "context": context, "file": name}


def identify(ctx: Context, model_ref: int | str, name: str, data: bytes, user: User | None, *,
             top_k: int = 5, lat: float | None = None, lon: float | None = None,
             date: str | None = None, depth: float | None = None) -> dict[str, Any]:
    """The Pl@ntNet / iNaturalist pattern: ranked taxa for one image.

    ``lat``/``lon``/``date``/``depth`` are validated and recorded with the usage event (for
    priors later); they do not change the ranking yet. (The API runs the same steps with the
    prediction batched: ``api/routes/identify.py``.)
    """
    from aqualens.models.registry import resolve_model

    context = identify_context(lat, lon, date, depth)
    model = identify_model(resolve_model(ctx, model_ref, user))
    model, rows, _ = predict_uploads(ctx, model, [(name, data)], user, top_k=top_k,
                                     details={"identify": True, **context})
    return identify_answer(model, rows[0], context, name)
