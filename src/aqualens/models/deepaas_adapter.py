"""Host an unmodified DEEPaaS v2 module (iMagine / AI4OS) as an AquaLens model.

A DEEPaaS module is an object (usually a Python module, sometimes a class) registered under the
``deepaas.v2.model`` entry-point group with ``get_metadata``, ``warm``, ``get_predict_args``,
``predict``, ``get_train_args``, ``train`` and an optional response ``schema``. Here it is named by
a *spec*:

- an entry-point name in ``deepaas.v2.model`` (what ``deepaas-run`` loads), or
- ``deepaas-test``: the demo model DEEPaaS 2.6.0 ships (served by ``deepaas-run`` when no other
  module is installed), or
- ``package.module`` / ``package.module:attribute``.

The registry stores a small JSON descriptor (``{"format": ..., "module": spec}``) as the artefact,
so the model has a sha256 PID like any other. The module's argument declarations (webargs /
marshmallow fields) become request validation (:meth:`DeepaasModel.parse_args`) and OpenAPI
parameters. ``deepaas`` is an optional dependency (``pip install aqualens[deepaas]``), imported
only when a DEEPaaS model is used.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import io
import json
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aqualens.core.errors import ModelError, NotFound, ValidationError
from aqualens.models.base import (Classification, ModelInfo, ModelRuntime, Result, TaxonScore,
                                  check_predict_args)

FORMAT = "aqualens-deepaas-module/1"
ENTRY_GROUP = "deepaas.v2.model"
TEST_MODEL = "deepaas-test"
TEST_MODEL_OBJECT = "deepaas.model.v2.test:TestModel"


def require_deepaas():  # noqa: ANN201 - the deepaas package
    """Import deepaas or explain how to get it."""
    try:
        import deepaas  # noqa: F401
        import marshmallow  # noqa: F401
        import webargs  # noqa: F401
    except ImportError:
        raise ModelError("DEEPaaS modules need the optional 'deepaas' dependency",
                         field="runtime", valid="pip install 'aqualens[deepaas]'") from None
    import deepaas

    return deepaas


def _load_object(spec: str) -> Any:
    """The module object for ``spec`` (see the module docstring); classes are instantiated."""
    from importlib.metadata import entry_points

    eps = {ep.name: ep for ep in entry_points(group=ENTRY_GROUP)}
    if spec in eps:
        obj = eps[spec].load()
    elif spec == TEST_MODEL:
        obj = _load_object(TEST_MODEL_OBJECT)
    elif spec and all(part.isidentifier() for part in spec.replace(":", ".").split(".")):
        mod_name, _, attr = spec.partition(":")
        try:
            obj = importlib.import_module(mod_name)
            for part in filter(None, attr.split(".")):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise NotFound(f"DEEPaaS module {spec!r} cannot be imported: {exc}", field="module",
                           valid=f"an entry point in {ENTRY_GROUP} ({', '.join(eps) or 'none'}),"
                                 f" {TEST_MODEL}, or package.module[:attribute]") from None
    else:
        raise NotFound(f"no DEEPaaS module {spec!r}", field="module",
                       valid=f"an entry point in {ENTRY_GROUP} ({', '.join(eps) or 'none'}), "
                             f"{TEST_MODEL}, or package.module[:attribute]")
    return obj() if inspect.isclass(obj) else obj


def descriptor(spec: str) -> bytes:
    """The artefact bytes that stand for a DEEPaaS module in the registry."""
    return json.dumps({"format": FORMAT, "module": spec}, sort_keys=True).encode()


def read_descriptor(path: Path) -> str:
    try:
        d = json.loads(Path(path).read_text())
        if d.get("format") != FORMAT or not isinstance(d.get("module"), str):
            raise ValueError("not a DEEPaaS module descriptor")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"{Path(path).name} is not a DEEPaaS module descriptor ({exc})",
                         field="artefact", valid=f'{{"format": "{FORMAT}", "module": "..."}}'
                         ) from None
    return d["module"]


def write_descriptor(spec: str, folder: Path) -> Path:
    path = Path(folder) / "module.json"
    path.write_bytes(descriptor(spec))
    return path


def _semver_or(version: Any, fallback: str) -> str:
    from aqualens.models.base import SEMVER_RE

    v = str(version or "").strip()
    if SEMVER_RE.match(v):
        return v
    parts = v.split(".")
    if 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
        return ".".join(str(int(p)) for p in parts + ["0"] * (3 - len(parts)))
    return fallback


def info_for_module(spec: str, *, name: str | None = None, version: str | None = None,
                    task: str = "classify") -> ModelInfo:
    """Describe a DEEPaaS module as a ModelInfo, from its ``get_metadata``."""
    require_deepaas()
    obj = _load_object(spec)
    meta = _metadata(obj, spec)
    name = name or str(meta.get("name") or spec)
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("-.") or "module"
    return ModelInfo(name=safe, version=version or _semver_or(meta.get("version"), "0.0.1"),
                     task=task, runtime="deepaas", description=str(meta.get("description", "")),
                     licence=meta.get("license") or meta.get("licence"),
                     options={"module": spec, "deepaas_metadata": _jsonable(meta)})


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def _metadata(obj: Any, name: str) -> dict[str, Any]:
    """``get_metadata()``, or DEEPaaS's generic fallback when the module lacks it."""
    try:
        d = obj.get_metadata()
    except (NotImplementedError, AttributeError):
        d = {"id": "0", "name": name,
             "description": f"Could not load description from underlying model (loaded '{name}')"}
    return dict(d) if isinstance(d, Mapping) else {"description": str(d)}


def field_location(fld: Any) -> str | None:
    return (getattr(fld, "metadata", None) or {}).get("location")


def is_file_field(fld: Any) -> bool:
    meta = getattr(fld, "metadata", None) or {}
    return meta.get("type") == "file" or meta.get("location") == "files"


class DeepaasModel(ModelRuntime):
    """A warm DEEPaaS module. Calls into the module are serialised (DEEPaaS itself runs one
    worker process per module by default, so modules need not be thread-safe)."""

    name = "deepaas"
    suffixes = (".json",)

    def __init__(self, info: ModelInfo, spec: str, obj: Any) -> None:
        super().__init__(info, "cpu")
        self.spec = spec
        self.obj = obj
        self._lock = threading.Lock()
        self.predict_args = self._args("get_predict_args")
        self.train_args = self._args("get_train_args")
        accept = self.predict_args.get("accept")
        choices = list(getattr(getattr(accept, "validate", None), "choices", None) or [])
        # Like deepaas-run: "*/*" is accepted too and the first choice is the default.
        self.accept_choices = choices
        self.default_accept = choices[0] if choices else "application/json"
        self.response_schema = self._schema()

    @classmethod
    def load(cls, artefact: Path, info: ModelInfo, device: str = "auto") -> DeepaasModel:
        require_deepaas()
        spec = read_descriptor(artefact) if Path(artefact).suffix == ".json" or \
            Path(artefact).is_file() else str(artefact)
        obj = _load_object(spec)
        model = cls(info, spec, obj)
        model.warm()
        return model

    @classmethod
    def from_spec(cls, spec: str, info: ModelInfo | None = None) -> DeepaasModel:
        """Load a module directly (no registry), e.g. to host it in tests."""
        require_deepaas()
        info = info or info_for_module(spec)
        model = cls(info, spec, _load_object(spec))
        model.warm()
        return model

    # -- module calls -----------------------------------------------------------------------

    def _args(self, method: str) -> dict[str, Any]:
        try:
            args = getattr(self.obj, method)()
        except (NotImplementedError, AttributeError):
            return {}
        return dict(args or {})

    def _schema(self):  # noqa: ANN202 - marshmallow schema class or None
        import marshmallow

        schema = getattr(self.obj, "schema", None)
        if isinstance(schema, dict):
            try:
                return marshmallow.Schema.from_dict(schema, name="ModelPredictionResponse")
            except Exception as exc:  # noqa: BLE001 - a module bug, reported clearly
                raise ModelError(f"DEEPaaS module {self.spec} declares an invalid response "
                                 f"schema: {exc}", field="schema") from None
        if inspect.isclass(schema) and issubclass(schema, marshmallow.Schema):
            return schema
        if schema is not None:
            raise ModelError(f"DEEPaaS module {self.spec} declares an invalid response schema",
                             field="schema")
        return None

    def warm(self) -> None:
        fn = getattr(self.obj, "warm", None)
        if fn is None:
            return
        try:
            fn()
        except NotImplementedError:
            pass

    def metadata(self) -> dict[str, Any]:
        return _metadata(self.obj, self.info.name)

    def call_predict(self, **kwargs: Any) -> Any:
        """``module.predict(**kwargs)``; a returned open file is read into bytes."""
        with self._lock:
            ret = self._call("predict", kwargs)
        if isinstance(ret, io.IOBase) or hasattr(ret, "read"):
            with ret:
                return ret.read()
        if type(ret).__name__ == "ReturnedFile" and getattr(ret, "filename", None):
            return Path(ret.filename).read_bytes()
        return ret

    def call_train(self, **kwargs: Any) -> Any:
        with self._lock:
            return self._call("train", kwargs)

    def _call(self, method: str, kwargs: dict[str, Any]) -> Any:
        fn = getattr(self.obj, method, None)
        if fn is None:
            raise ModelError(f"DEEPaaS module {self.spec} does not implement {method}",
                             field=method)
        try:
            return fn(**kwargs)
        except NotImplementedError:
            raise ModelError(f"DEEPaaS module {self.spec} does not implement {method}",
                             field=method) from None

    def validate_response(self, ret: Any) -> None:
        """Check a predict result against the module's response schema (like deepaas-run)."""
        import marshmallow

        if self.response_schema is None:
            return
        try:
            self.response_schema().load(ret)
        except marshmallow.ValidationError as exc:
            raise ModelError(f"DEEPaaS module {self.spec} returned a response that does not "
                             f"match its schema: {exc.messages}", field="schema") from None

    # -- argument handling ------------------------------------------------------------------

    def parse_args(self, which: str, *, query: Mapping[str, Any], form: Mapping[str, Any],
                   headers: Mapping[str, str], getlist=None) -> dict[str, Any]:  # noqa: ANN001
        """Validate request values against the module's declared arguments (``which`` is
        ``predict`` or ``train``). Looks in the field's declared location, else query string
        then form (files included). Returns the loaded arguments; a ValidationError names each
        bad field (``details`` = {field: [messages]}, the shape deepaas-run answers)."""
        import marshmallow
        from marshmallow import fields as mf

        declared = self.predict_args if which == "predict" else self.train_args
        raw: dict[str, Any] = {}
        for key, fld in declared.items():
            name = getattr(fld, "data_key", None) or key
            loc = field_location(fld)
            multiple = isinstance(fld, mf.List)
            sources: list[tuple[str, Mapping[str, Any]]]
            if loc == "headers":
                sources = [("headers", headers)]
            elif loc in ("form", "files"):
                sources = [("form", form)]
            elif loc in ("query", "querystring"):
                sources = [("query", query)]
            else:
                sources = [("query", query), ("form", form)]
            for src_name, src in sources:
                if name in src:
                    if multiple and getlist is not None:
                        raw[name] = getlist(src_name, name)
                    else:
                        raw[name] = src[name]
                    break
        if "accept" in declared and self.accept_choices:
            acc = raw.get("accept")
            if acc == "*/*":
                raw["accept"] = "application/json"
            elif acc is None:
                raw["accept"] = self.default_accept
        # Files are passed through untouched; marshmallow's generic Field accepts any object.
        schema_cls = marshmallow.Schema.from_dict(dict(declared), name=f"{which.title()}Args")
        try:
            return dict(schema_cls(unknown=marshmallow.EXCLUDE).load(raw))
        except marshmallow.ValidationError as exc:
            msgs = exc.messages if isinstance(exc.messages, dict) else {"_": exc.messages}
            first = next(iter(msgs))
            text = "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                             for k, v in msgs.items())
            raise ValidationError(text, field=str(first), details=msgs) from None

    def file_args(self, which: str = "predict") -> list[str]:
        declared = self.predict_args if which == "predict" else self.train_args
        return [k for k, f in declared.items() if is_file_field(f)]

    # -- the ModelRuntime interface ---------------------------------------------------------

    def predict(self, images: list[np.ndarray], top_k: int = 5,
                threshold: float = 0.0) -> list[Result]:
        """Run the module once per image (DEEPaaS modules take one file per call) and read its
        answer as a classification (``labels``/``probabilities`` or ``[{label, probability}]``)."""
        from PIL import Image

        check_predict_args(images, top_k, threshold)
        files = self.file_args()
        if not files:
            raise ModelError(f"DEEPaaS module {self.spec} declares no file argument to send "
                             "images to", field="get_predict_args")
        wrapper = importlib.import_module("deepaas.model.v2.wrapper")
        defaults = {k: f.load_default for k, f in self.predict_args.items()
                    if k not in files and f.load_default is not marshmallow_missing()}
        missing = [k for k, f in self.predict_args.items()
                   if f.required and k not in files and k not in defaults]
        params = dict(self.info.options.get("predict_params", {}))
        missing = [k for k in missing if k not in params]
        if missing:
            raise ModelError(f"DEEPaaS module {self.spec} needs arguments {', '.join(missing)}; "
                             "set them in the model's options.predict_params", field=missing[0])
        if "accept" in self.predict_args:
            defaults["accept"] = "application/json"
        out: list[Result] = []
        for im in images:
            fd, tmp = tempfile.mkstemp(suffix=".png")
            os.close(fd)
            try:
                Image.fromarray(im if im.ndim == 2 or im.shape[2] != 1 else im[:, :, 0]).save(tmp)
                up = wrapper.UploadedFile(name=files[0], filename=tmp, content_type="image/png",
                                          original_filename="image.png")
                ret = self.call_predict(**{**defaults, **params, files[0]: up})
            finally:
                Path(tmp).unlink(missing_ok=True)
            out.append(self._as_classification(ret, top_k, threshold))
        return out

    def _as_classification(self, ret: Any, top_k: int, threshold: float) -> Classification:
        pairs = _label_scores(ret)
        if pairs is None:
            raise ModelError(f"cannot read the answer of DEEPaaS module {self.spec} as a "
                             "classification; call it through /v2/models/.../predict/",
                             field="predict")
        aphia = {lab.name: lab.aphia_id for lab in self.info.labels}
        index = {lab.name: i for i, lab in enumerate(self.info.labels)}
        pairs.sort(key=lambda p: -p[1])
        top = [TaxonScore(lab, aphia.get(lab), round(float(s), 6), index.get(lab, -1))
               for lab, s in pairs[:top_k] if s >= threshold]
        return Classification(top)


def marshmallow_missing():  # noqa: ANN201
    import marshmallow

    return marshmallow.missing


def _label_scores(ret: Any) -> list[tuple[str, float]] | None:
    """Find (label, score) pairs in the common DEEPaaS answer shapes."""
    if isinstance(ret, (bytes, str)):
        return None
    if isinstance(ret, Mapping):
        if "predictions" in ret:
            return _label_scores(ret["predictions"])
        labels = ret.get("labels") or ret.get("pred_lab")
        probs = ret.get("probabilities") or ret.get("pred_prob") or ret.get("scores")
        if isinstance(labels, list) and labels and isinstance(labels[0], Mapping):
            return [(str(x.get("label") or x.get("name")),
                     float(x.get("probability", x.get("score", 0.0)))) for x in labels]
        if isinstance(labels, list) and isinstance(probs, list):
            if labels and isinstance(labels[0], list):  # one list per image: take the first
                labels, probs = labels[0], probs[0]
            return [(str(lab), float(p)) for lab, p in zip(labels, probs)]
        return None
    if isinstance(ret, list) and ret:
        if all(isinstance(x, Mapping) and ("label" in x or "name" in x) for x in ret):
            return [(str(x.get("label") or x.get("name")),
                     float(x.get("probability", x.get("score", 0.0)))) for x in ret]
        return _label_scores(ret[0])
    return None


def data_uri_png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()
