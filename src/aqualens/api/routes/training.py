"""REST routes for dataset versions, training and evaluation.

- ``POST /api/v1/datasets`` freezes a collection or query into ``name@N``; ``GET`` lists, shows,
  diffs and downloads the manifest; any change to a frozen version answers 409.
- ``POST /api/v1/train`` queues a ``train`` job (202 + the job; follow it under /api/v1/jobs).
- ``POST /api/v1/models/{ref}/evaluate`` evaluates a model on a dataset split (synchronous).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from aqualens.api.deps import current_user, get_ctx, get_session, optional_user
from aqualens.catalog import datasets as ds
from aqualens.catalog.context import Context
from aqualens.catalog.tables import User
from aqualens.core.errors import Conflict

router = APIRouter(prefix="/api/v1", tags=["training"])


class FreezeRequest(BaseModel):
    name: str = Field(description="dataset name; the version number is assigned (name@N)")
    collection: str | int | None = Field(None, description="collection id or name")
    query: dict[str, Any] | None = Field(None, description="ImageQuery fields (search)")
    statuses: list[str] = Field(["validated"], description="annotation statuses to include")
    split: dict[str, float] | str | None = Field(
        None, description='fractions, e.g. {"train": 0.8, "val": 0.1, "test": 0.1} or "80/10/10"')
    seed: int = 0
    group_by: str | None = Field(None, description="station, instrument, meta.KEY or name:REGEX")
    splits: dict[str, list[str]] | None = Field(
        None, description="splits given by the user: {split: [image name or sha256]}")
    labels: list[str] | None = Field(None, description="only these labels")
    description: str = ""
    visibility: Literal["private", "public"] = "private"


class TrainRequest(BaseModel):
    dataset: str = Field(description="NAME@N")
    task: Literal["classify", "detect"] | None = None
    base_model: str | None = Field(None, description="NAME@VERSION to fine-tune from")
    epochs: int | None = Field(None, ge=1, le=10000)
    batch_size: int | None = Field(None, ge=1, le=4096)
    device: str = "auto"
    seed: int = Field(0, ge=0)
    name: str | None = None
    version: str | None = None
    input_size: int | list[int] | None = None
    max_minutes: float | None = Field(None, gt=0)
    licence: str | None = None
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="further training parameters (lr, patience, ...)")


class EvaluateRequest(BaseModel):
    dataset: str = Field(description="NAME@N")
    split: str = "test"
    store: bool = Field(True, description="keep the metrics on the model")


@router.post("/datasets", status_code=201)
def freeze_dataset(body: FreezeRequest, session: Session = Depends(get_session),
                   user: User = Depends(current_user)) -> dict[str, Any]:
    """Freeze a collection or query as the next version of ``name``."""
    from aqualens.training.datasets import freeze
    from aqualens.training.splits import check_fractions, parse_fractions

    fractions = None
    if isinstance(body.split, str):
        fractions = parse_fractions(body.split)
    elif isinstance(body.split, dict):
        fractions = check_fractions(body.split)
    dv = freeze(session, user, body.name, collection=body.collection, query=body.query,
                statuses=body.statuses, fractions=fractions, seed=body.seed,
                group_by=body.group_by, split_lists=body.splits, labels=body.labels,
                description=body.description, visibility=body.visibility)
    out = ds.version_dict(dv, full=True)
    session.commit()
    return out


@router.get("/datasets")
def list_datasets(name: str | None = None, session: Session = Depends(get_session),
                  user: User | None = Depends(optional_user)) -> list[dict[str, Any]]:
    """Dataset versions the caller may read."""
    return [ds.version_dict(v) for v in ds.list_versions(session, user, name)]


@router.get("/datasets/{ref}")
def show_dataset(ref: str, manifest: bool = False, session: Session = Depends(get_session),
                 user: User | None = Depends(optional_user)) -> dict[str, Any]:
    """One version (``name@N``, ``name`` for the latest, or id); ``manifest=true`` adds it."""
    dv = ds.get_version(session, ref, user)
    out = ds.version_dict(dv, full=True)
    if manifest:
        out["manifest"] = dv.manifest
    return out


@router.get("/datasets/{ref}/manifest")
def dataset_manifest(ref: str, session: Session = Depends(get_session),
                     user: User | None = Depends(optional_user)) -> Response:
    """The manifest as the exact canonical JSON its sha256 was computed on."""
    dv = ds.get_version(session, ref, user)
    return Response(ds.canonical_json(dv.manifest), media_type="application/json",
                    headers={"Digest": f"sha-256={dv.manifest_sha256}",
                             "Content-Disposition":
                                 f'attachment; filename="{dv.concept}-{dv.version}.json"'})


@router.get("/datasets/{ref}/diff/{other}")
def diff_datasets(ref: str, other: str, session: Session = Depends(get_session),
                  user: User | None = Depends(optional_user)) -> dict[str, Any]:
    """Images, labels and annotations added/removed/changed from ``ref`` to ``other``."""
    return ds.diff_versions(ds.get_version(session, ref, user),
                            ds.get_version(session, other, user))


@router.put("/datasets/{ref}", operation_id="replace_dataset_version")
@router.patch("/datasets/{ref}", operation_id="patch_dataset_version")
def change_dataset(ref: str, session: Session = Depends(get_session),
                   user: User = Depends(current_user)) -> None:
    """Frozen versions cannot change: always 409 (freeze a new version instead)."""
    dv = ds.get_version(session, ref, user)
    raise Conflict(f"dataset version {dv.ref} is frozen", field="dataset",
                   valid="POST /api/v1/datasets to freeze a new version")


@router.delete("/datasets/{ref}")
def delete_dataset(ref: str, session: Session = Depends(get_session),
                   user: User = Depends(current_user)) -> dict[str, Any]:
    """Delete a version no model depends on (409 when one was trained or measured on it)."""
    dv = ds.get_version(session, ref, user)
    out = {"deleted": dv.ref, "id": dv.id}
    ds.delete_version(session, dv.id, user)
    session.commit()
    return out


@router.post("/train", status_code=202)
def train(body: TrainRequest, session: Session = Depends(get_session),
          user: User = Depends(current_user)) -> JSONResponse:
    """Queue a training job; answers 202 with the job (``Location`` to poll)."""
    from aqualens.processing.jobs import job_to_dict
    from aqualens.training.service import start_training

    opts = dict(body.options)
    opts.update({k: v for k, v in body.model_dump(exclude={"dataset", "task", "base_model",
                                                            "options"}).items()
                 if v is not None})
    job = start_training(session, user, body.dataset, body.task, base_model=body.base_model,
                         **opts)
    session.commit()
    return JSONResponse(job_to_dict(job), status_code=202,
                        headers={"Location": f"/api/v1/jobs/{job.id}"})


@router.post("/models/{ref}/evaluate")
def evaluate(ref: str, body: EvaluateRequest, ctx: Context = Depends(get_ctx),
             user: User = Depends(current_user)) -> dict[str, Any]:
    """Evaluate a model on a dataset split; metrics are stored on the model when ``store``."""
    from aqualens.training.model_eval import evaluate_model

    return evaluate_model(ctx, ref, body.dataset, user, split=body.split, store=body.store)
