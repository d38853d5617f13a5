"""The model registry: Model rows + artefacts in the blob store (warm runtimes: models/warm.py).

A model is ``name`` + semantic ``version``; its PID is the sha256 of its artefact (the ONNX or
TorchScript file, or for a DEEPaaS module the small JSON descriptor naming the module). Models are
owned and private by default; :func:`update_model` can make one public.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aqualens.catalog.ids import id_from_ref
from aqualens.catalog.tables import Annotation, DatasetVersion, Model, User
from aqualens.catalog.users import check_visibility, check_write, visible
from aqualens.core.errors import Conflict, NotFound, ValidationError
from aqualens.core.plugins import get_registry
from aqualens.models.base import (
    SEMVER_RE,
    ModelInfo,
    ModelRuntime,
    validate_name,
    validate_version,
)

if TYPE_CHECKING:
    from aqualens.catalog.context import Context
    from aqualens.storage.base import BlobStore

GROUP = "aqualens.models"
LICENCE_MAX = 100  # the width of models.licence
EDITABLE = ("description", "card", "licence", "keywords", "visibility", "metrics")


def runtime_class(runtime: str) -> type[ModelRuntime]:
    """The ModelRuntime class registered as ``runtime`` in the ``aqualens.models`` group."""
    try:
        return get_registry().get(GROUP, runtime)
    except NotFound:
        raise ValidationError(f"unknown model runtime {runtime!r}", field="runtime",
                              valid=", ".join(get_registry().names(GROUP))) from None


def guess_runtime(path: Path) -> str:
    """``onnx`` for ``.onnx``, ``torchscript`` for ``.pt``/``.pth``/``.ts``, by suffix."""
    suffix = Path(path).suffix.lower()
    for name in get_registry().names(GROUP):
        try:
            cls = runtime_class(name)
        except Exception:  # noqa: BLE001 - a broken third-party plugin must not hide the others
            continue
        if suffix in getattr(cls, "suffixes", ()):
            return name
    raise ValidationError(f"cannot tell the runtime of {Path(path).name} from its suffix",
                          field="runtime", valid="onnx (.onnx), torchscript (.pt, .pth, .ts)")


def semver_key(version: str) -> tuple:
    """Sort key following semver precedence (a pre-release sorts before its release)."""
    m = SEMVER_RE.match(version)
    if not m:
        return (0, 0, 0, 0, ())
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[4]
    pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                    for p in pre.split(".")) if pre else ()
    return (major, minor, patch, 0 if pre else 1, pre_key)


def check_metrics(metrics: Any) -> dict[str, Any]:
    """Metrics: ``{"overall": {name: number}, "per_class": {label: {name: number}},
    "dataset_version_id": int | None, ...}``; free extra keys are kept (plots, split)."""
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise ValidationError("metrics must be an object", field="metrics",
                              valid='{"overall": {...}, "per_class": {...}}')
    for key in ("overall", "per_class"):
        if key in metrics and not isinstance(metrics[key], dict):
            raise ValidationError(f"metrics.{key} must be an object", field=f"metrics.{key}")
    try:
        return json.loads(json.dumps(metrics))
    except (TypeError, ValueError):
        raise ValidationError("metrics must be JSON", field="metrics") from None


def model_info(model: Model) -> ModelInfo:
    """The ModelInfo a Model row describes."""
    return ModelInfo(name=model.name, version=model.version, task=model.task,
                     labels=list(model.labels or []), input_spec=dict(model.input_spec or {}),
                     runtime=model.runtime, description=model.description or "",
                     licence=model.licence, keywords=list(model.keywords or []),
                     metrics=dict(model.metrics or {}), card=model.card or "",
                     options=dict(model.options or {}))


def check_licence(value: str | None) -> str | None:
    """A licence (SPDX id or short name) that fits its column, or None."""
    if value is not None and (not isinstance(value, str) or len(value) > LICENCE_MAX):
        raise ValidationError(f"licence {str(value)[:40]!r}... is not a short licence name",
                              field="licence", valid=f"an SPDX id or short licence name, at "
                                                     f"most {LICENCE_MAX} characters")
    return value


def register_model(session: Session, store: BlobStore, artefact_path: Path, info: ModelInfo,
                   owner_id: int, *, metrics: dict | None = None, card: str = "",
                   licence: str | None = None, keywords: tuple | list = (),
                   dataset_version_id: int | None = None, job_id: str | None = None,
                   params: dict | None = None, extra_files: dict[str, Path] | None = None,
                   visibility: str = "private", check_load: bool = True) -> Model:
    """Store the artefact (and extra files) and create the Model row.

    ``metrics``/``card``/``licence``/``keywords`` override what ``info`` carries. With
    ``check_load`` the artefact is loaded once with its runtime first, so a broken file or an
    input spec that contradicts the model is refused before anything is stored.
    """
    validate_name(info.name)
    validate_version(info.version)
    check_visibility(visibility)
    artefact_path = Path(artefact_path)
    if not artefact_path.is_file():
        raise ValidationError(f"artefact {artefact_path} is not a file", field="artefact")
    if session.scalar(select(Model.id).where(Model.name == info.name,
                                             Model.version == info.version)) is not None:
        raise Conflict(f"model {info.name} {info.version} exists already", field="version",
                       valid="a new semantic version")
    if dataset_version_id is not None and session.get(DatasetVersion, dataset_version_id) is None:
        raise NotFound(f"no dataset version {dataset_version_id}", field="dataset_version_id")
    cls = runtime_class(info.runtime)
    if check_load:
        cls.load(artefact_path, info, device="cpu").close()
    files = {}
    for name, path in (extra_files or {}).items():
        if not Path(path).is_file():
            raise ValidationError(f"extra file {name!r} ({path}) is not a file", field=name)
        files[name] = store.put_file(Path(path))
    sha = store.put_file(artefact_path)
    metrics = check_metrics(metrics if metrics is not None else info.metrics)
    row = Model(name=info.name, version=info.version, task=info.task, runtime=info.runtime,
                labels=[lab.to_dict() for lab in info.labels],
                input_spec=info.input_spec.to_dict(), metrics=metrics,
                keywords=[str(k) for k in (keywords or info.keywords or [])],
                licence=check_licence(licence if licence is not None else info.licence),
                card=card or info.card or "", description=info.description or "",
                artefact_sha256=sha, dataset_version_id=dataset_version_id, job_id=job_id,
                params=dict(params or {}), options=dict(info.options or {}), files=files,
                owner_id=owner_id, visibility=visibility)
    session.add(row)
    session.flush()
    forget_resolved_on_commit(session)  # a name may now mean this newer version
    return row


def get_model(session: Session, ref: int | str, user: User | None) -> Model:
    """A model by id, ``name`` (highest version) or ``name@version``, if ``user`` may read it."""
    query = select(Model).where(visible(Model, user))
    ref_id = id_from_ref(ref, "model")
    if ref_id is not None:
        row = session.scalar(query.where(Model.id == ref_id))
    else:
        name, _, version = str(ref).partition("@")
        if version:
            row = session.scalar(query.where(Model.name == name, Model.version == version))
        else:
            rows = list(session.scalars(query.where(Model.name == name)))
            row = max(rows, key=lambda m: semver_key(m.version)) if rows else None
    if row is None:
        raise NotFound(f"no model {ref!r}", field="model",
                       valid="a model id, name or name@version from 'aqualens models list'")
    return row


@dataclass(frozen=True)
class ModelRef:
    """The few columns of a Model row the predict path needs (detached, immutable)."""

    id: int
    name: str
    version: str
    task: str
    runtime: str
    artefact_sha256: str
    owner_id: int
    visibility: str


_REF_COLUMNS = (Model.id, Model.name, Model.version, Model.task, Model.runtime,
                Model.artefact_sha256, Model.owner_id, Model.visibility)
_db_urls: dict[tuple, str] = {}


def db_url_of(ctx: Context) -> str:
    """``ctx.db_url``, memoised per (database_url, data_dir): deriving it resolves a path on
    every call, which the per-request path does not need to repeat."""
    s = ctx.settings
    key = (s.database_url, s.data_dir)
    url = _db_urls.get(key)
    if url is None:
        url = _db_urls[key] = ctx.db_url
    return url


def resolve_model(ctx: Context, ref: int | str | ModelRef, user: User | None) -> ModelRef:
    """What :func:`get_model` finds (same rules, same errors), as a :class:`ModelRef`, with one
    light read on a pooled connection instead of an ORM session and transaction.

    The permission check is made against the row as it is now (another process may have changed
    its visibility), so nothing here is cached; the heavy parts (ModelInfo, runtime) are cached
    by :func:`runtime_for` under the immutable artefact sha256.
    """
    from aqualens.catalog.db import get_engine

    if isinstance(ref, ModelRef):
        ref = ref.id
    query = select(*_REF_COLUMNS).where(visible(Model, user))
    ref_id = id_from_ref(ref, "model")
    if ref_id is not None:
        query = query.where(Model.id == ref_id)
    else:
        name, _, version = str(ref).partition("@")
        query = query.where(Model.name == name)
        if version:
            query = query.where(Model.version == version)
    with get_engine(db_url_of(ctx)).connect() as conn:
        rows = [ModelRef(*r) for r in conn.execute(query)]
    if not rows:
        raise NotFound(f"no model {ref!r}", field="model",
                       valid="a model id, name or name@version from 'aqualens models list'")
    return max(rows, key=lambda m: semver_key(m.version))


_resolved: dict[tuple, tuple[float, ModelRef]] = {}


def resolve_model_cached(ctx: Context, ref: int | str, user: User | None) -> ModelRef:
    """:func:`resolve_model`, reusing an answer for ``models.resolve_cache_seconds`` (the
    predict API's per-request path). Registering, changing or deleting a model in this process
    clears the cache at once (:func:`forget_resolved`); other processes' changes apply within
    that time."""
    ttl = ctx.settings.models.resolve_cache_seconds
    if ttl <= 0:
        return resolve_model(ctx, ref, user)
    hit = cached_model(ctx, ref, user)
    if hit is not None:
        return hit
    now = time.monotonic()
    model = resolve_model(ctx, ref, user)
    key = (db_url_of(ctx), str(ref), user.id if user is not None else None)
    if len(_resolved) > 10_000:  # many callers x refs: start over rather than grow
        _resolved.clear()
    _resolved[key] = (now + ttl, model)
    return model


def cached_model(ctx: Context, ref: int | str, user: User | None) -> ModelRef | None:
    """The cached answer of :func:`resolve_model_cached`, if still fresh; else None."""
    if ctx.settings.models.resolve_cache_seconds <= 0:
        return None
    hit = _resolved.get((db_url_of(ctx), str(ref), user.id if user is not None else None))
    return hit[1] if hit is not None and hit[0] > time.monotonic() else None


def forget_resolved() -> None:
    """Drop every cached model lookup (after any change to a model row)."""
    _resolved.clear()


def forget_resolved_on_commit(session: Session) -> None:
    """Drop the cached lookups once ``session`` commits its change to a model row (clearing
    before the commit would let a concurrent request cache the old row again)."""
    from sqlalchemy import event

    event.listen(session, "after_commit", lambda _s: forget_resolved(), once=True)


def list_models(session: Session, user: User | None, *, task: str | None = None,
                name: str | None = None, text: str | None = None, latest_only: bool = False,
                limit: int = 200, offset: int = 0) -> list[Model]:
    """Models ``user`` may see, by name then newest version first."""
    query = select(Model).where(visible(Model, user))
    if task:
        query = query.where(Model.task == task)
    if name:
        query = query.where(Model.name == name)
    rows = list(session.scalars(query.order_by(Model.name, Model.id)))
    if text:
        t = text.lower()
        rows = [m for m in rows if t in m.name.lower() or t in (m.description or "").lower()
                or any(t in str(k).lower() for k in (m.keywords or []))]
    rows.sort(key=lambda m: semver_key(m.version), reverse=True)
    rows.sort(key=lambda m: m.name)  # stable: newest version first within a name
    if latest_only:
        seen: set[str] = set()
        rows = [m for m in rows if not (m.name in seen or seen.add(m.name))]
    return rows[offset:offset + limit]


def update_model(session: Session, ref: int | str, user: User | None, **changes: Any) -> Model:
    """Change the descriptive fields of a model (never its artefact, name, version or labels:
    those make a new version)."""
    model = get_model(session, ref, user)
    check_write(model, user, "model")
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise ValidationError(f"cannot change {', '.join(unknown)} of a model", field=unknown[0],
                              valid=", ".join(EDITABLE) + " (register a new version for the rest)")
    if "visibility" in changes:
        model.visibility = check_visibility(changes["visibility"])
    if "metrics" in changes:
        model.metrics = check_metrics(changes["metrics"])
    if "keywords" in changes:
        kw = changes["keywords"]
        if not isinstance(kw, (list, tuple)) or not all(isinstance(k, str) for k in kw):
            raise ValidationError("keywords must be a list of strings", field="keywords")
        model.keywords = list(kw)
    for key in ("description", "card", "licence"):
        if key in changes:
            value = changes[key]
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{key} must be text", field=key)
            if key == "licence":
                check_licence(value)
            setattr(model, key, value if key == "licence" else (value or ""))
    session.flush()
    forget_resolved_on_commit(session)
    # Warm runtimes of this model carry its ModelInfo: give them the new descriptive fields
    # (nothing a runtime computes with can change without a new version).
    from aqualens.catalog.db import normalise_url

    from aqualens.models.warm import refresh_info

    refresh_info(normalise_url(session.get_bind().url.render_as_string(hide_password=False)),
                 model.id, model.artefact_sha256, model_info(model))
    return model


def delete_model(ctx: Context, ref: int | str, user: User | None) -> dict[str, Any]:
    """Delete a model row; its blobs go too unless another model shares them. Annotations it
    produced stay (their ``model_id`` becomes null; ``attributes.model`` keeps name@version)."""
    with ctx.session() as s:
        model = get_model(s, ref, user)
        check_write(model, user, "model")
        shas = {model.artefact_sha256, *(model.files or {}).values()}
        if model.package_sha256:
            shas.add(model.package_sha256)
        out = {"id": model.id, "name": model.name, "version": model.version}
        n_ann = s.scalar(select(Annotation.id).where(Annotation.model_id == model.id).limit(1))
        s.delete(model)
        s.flush()
        still = set()
        for other in s.scalars(select(Model)):
            still |= {other.artefact_sha256, other.package_sha256, *(other.files or {}).values()}
    for sha in shas - still:
        try:
            ctx.store.delete(sha)
        except NotFound:
            pass
    from aqualens.models.warm import forget_runtime

    forget_runtime(out["id"])
    forget_resolved()
    out["had_annotations"] = n_ann is not None
    return out


def model_dict(model: Model, *, owner_name: str | None = None) -> dict[str, Any]:
    """The JSON view of a model (API, CLI)."""
    return {"id": model.id, "name": model.name, "version": model.version, "task": model.task,
            "runtime": model.runtime, "pid": f"sha256:{model.artefact_sha256}",
            "artefact_sha256": model.artefact_sha256, "package_sha256": model.package_sha256,
            "labels": model.labels, "input_spec": model.input_spec, "metrics": model.metrics,
            "keywords": model.keywords, "licence": model.licence, "card": model.card,
            "description": model.description, "options": model.options, "files": model.files,
            "lineage": {"dataset_version_id": model.dataset_version_id, "job_id": model.job_id,
                        "params": model.params},
            "owner_id": model.owner_id, "owner": owner_name, "visibility": model.visibility,
            "created_at": model.created_at.isoformat() if model.created_at else None}
