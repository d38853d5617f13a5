"""Model packages (``.aqlmodel``): one zip file that carries a model to another instance or to a
vessel without internet.

Members::

    aqualens-model.json   format version, ModelInfo, artefact name + sha256 (the PID), lineage
    artefact/<file>       the ONNX / TorchScript file (or a DEEPaaS module descriptor)
    labels.json           [{"name", "aphia_id"}, ...] in output order
    card.md               the model card
    requirements.txt      what the runtime needs (pip requirement lines)
    files/<name>          extra files (confusion matrix plot, native checkpoint, ...)
    MANIFEST.sha256       "<sha256>  <member>" for every other member

Packages are written deterministically (sorted members, fixed timestamps), so exporting the same
model twice gives byte-identical files. Opening a package verifies everything before use: a bad
zip, an unsafe member path (absolute, ``..``), a missing, extra or changed member, or an artefact
whose sha256 differs from the metadata is refused with :class:`IntegrityError` naming the member.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from aqualens import __version__
from aqualens.core.errors import Conflict, IntegrityError, ValidationError
from aqualens.models.base import ModelInfo

if TYPE_CHECKING:
    from aqualens.catalog.context import Context
    from aqualens.catalog.tables import Model, User

FORMAT = "aqualens-model/1"
SUFFIX = ".aqlmodel"
META, MANIFEST, LABELS, CARD, REQS = ("aqualens-model.json", "MANIFEST.sha256", "labels.json",
                                      "card.md", "requirements.txt")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
MAX_UNPACKED = 8 * 1024 ** 3        # refuse zip bombs before extracting anything

RUNTIME_REQUIREMENTS = {
    "onnx": ["aqualens", "onnxruntime>=1.17", "numpy>=1.26", "opencv-python-headless>=4.9"],
    "torchscript": ["aqualens", "torch>=2.0", "numpy>=1.26", "opencv-python-headless>=4.9"],
    "deepaas": ["aqualens[deepaas]", "deepaas==2.6.0"],
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safe_name(name: str) -> str:
    """Refuse member names that could escape the extraction folder (zip-slip)."""
    p = PurePosixPath(name)
    if (not name or name.startswith(("/", "\\")) or "\\" in name or ".." in p.parts
            or (len(name) > 1 and name[1] == ":") or name.endswith("/")):
        raise IntegrityError(f"package member {name!r} has an unsafe path", field=name,
                             valid="relative paths inside the package")
    return name


def _write(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    zi = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.external_attr = 0o644 << 16
    zf.writestr(zi, data)


def requirements_for(info: ModelInfo) -> list[str]:
    reqs = list(RUNTIME_REQUIREMENTS.get(info.runtime, ["aqualens"]))
    reqs += [str(r) for r in info.options.get("requirements", [])]
    return reqs


def build_package(out: Path, artefact: Path, info: ModelInfo, *,
                  extra_files: dict[str, Path] | None = None,
                  lineage: dict[str, Any] | None = None) -> Path:
    """Write a package for ``artefact`` + ``info`` to ``out`` (atomically)."""
    artefact = Path(artefact)
    art_bytes = artefact.read_bytes()
    art_name = f"artefact/{artefact.name}"
    members: dict[str, bytes] = {art_name: art_bytes}
    for name, path in sorted((extra_files or {}).items()):
        _safe_name(f"files/{name}")
        members[f"files/{name}"] = Path(path).read_bytes()
    meta = {"format": FORMAT, "aqualens_version": __version__, "model": info.to_dict(),
            "artefact": {"path": art_name, "sha256": _sha(art_bytes), "size": len(art_bytes)},
            "pid": f"sha256:{_sha(art_bytes)}", "lineage": lineage or {},
            "files": sorted(k for k in members if k.startswith("files/"))}
    members[META] = json.dumps(meta, indent=2, sort_keys=True).encode()
    members[LABELS] = json.dumps([lab.to_dict() for lab in info.labels], indent=2).encode()
    members[CARD] = (info.card or f"# {info.name} {info.version}\n").encode()
    members[REQS] = ("\n".join(requirements_for(info)) + "\n").encode()
    manifest = "".join(f"{_sha(data)}  {name}\n" for name, data in sorted(members.items()))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name in sorted(members):
            _write(zf, name, members[name])
        _write(zf, MANIFEST, manifest.encode())
    tmp.replace(out)
    return out


@dataclass
class ModelPackage:
    """A verified, extracted package. Use as a context manager (removes the extraction)."""

    path: Path
    info: ModelInfo
    artefact: Path
    artefact_sha256: str
    meta: dict[str, Any]
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> ModelPackage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_manifest(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        sha, sep, name = line.partition("  ")
        if not sep or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise IntegrityError(f"{MANIFEST} line {n} is malformed", field=MANIFEST,
                                 valid="'<sha256>  <member>' lines")
        out[_safe_name(name)] = sha
    return out


def open_package(path: Path) -> ModelPackage:
    """Verify ``path`` completely, extract it to a temporary folder and return it."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"model package {path} does not exist", field=str(path))
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise IntegrityError(f"{path.name} is not a valid model package (not a zip: {exc})",
                             field=path.name, valid=f"a {SUFFIX} file from 'aqualens models "
                                                    "export'") from None
    with zf:
        infos = zf.infolist()
        names = [_safe_name(i.filename) for i in infos]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})[0]
            raise IntegrityError(f"package member {dup!r} appears twice", field=dup)
        if sum(i.file_size for i in infos) > MAX_UNPACKED:
            raise IntegrityError("package unpacks to more than 8 GiB", field=path.name)
        if MANIFEST not in names:
            raise IntegrityError(f"package lacks its checksum manifest {MANIFEST}",
                                 field=MANIFEST)
        manifest = _read_manifest(zf.read(MANIFEST).decode("utf-8", "replace"))
        for required in (META, LABELS, CARD, REQS):
            if required not in manifest:
                raise IntegrityError(f"{MANIFEST} does not list {required}", field=required)
        extra = sorted(set(names) - set(manifest) - {MANIFEST})
        if extra:
            raise IntegrityError(f"package member {extra[0]!r} is not in {MANIFEST}",
                                 field=extra[0])
        folder = Path(tempfile.mkdtemp(prefix="aqlmodel-"))
        try:
            for name, want in sorted(manifest.items()):
                if name not in names:
                    raise IntegrityError(f"package member {name!r} is missing", field=name)
                try:
                    data = zf.read(name)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise IntegrityError(f"package member {name!r} is corrupted ({exc})",
                                         field=name) from None
                if _sha(data) != want:
                    raise IntegrityError(f"package member {name!r} does not match its "
                                         "checksum (the package was changed or corrupted)",
                                         field=name)
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            try:
                meta = json.loads((folder / META).read_text())
                info = ModelInfo.from_dict(meta["model"])
                art = meta["artefact"]
                art_path, art_sha = _safe_name(art["path"]), art["sha256"]
            except (ValueError, KeyError, TypeError) as exc:
                raise IntegrityError(f"{META} is not valid model metadata ({exc})",
                                     field=META) from None
            if meta.get("format") != FORMAT:
                raise IntegrityError(f"unsupported package format {meta.get('format')!r}",
                                     field=META, valid=FORMAT)
            if art_path not in manifest or manifest[art_path] != art_sha:
                raise IntegrityError(f"artefact {art_path!r} does not match the sha256 in {META}",
                                     field=art_path)
            files = {n[len("files/"):]: folder / n for n in manifest if n.startswith("files/")}
            return ModelPackage(path, info, folder / art_path, art_sha, meta, folder, files)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise


def export_package(ctx: Context, ref: int | str, user: User | None, out: Path | None = None
                   ) -> tuple[Path, Model]:
    """Write the package of a registered model (to ``out`` or the instance's cache) and record
    its sha256 on the model. Returns (path, model)."""
    from aqualens.catalog.tables import Model
    from aqualens.models.registry import get_model, model_info, runtime_class
    from aqualens.models.warm import artefact_path
    from aqualens.storage.base import sha256_file

    with ctx.session() as s:
        model = get_model(s, ref, user)
        info, sha, model_id = model_info(model), model.artefact_sha256, model.id
        files = dict(model.files or {})
        lineage = {"dataset_version_id": model.dataset_version_id, "job_id": model.job_id,
                   "params": model.params}
    cls = runtime_class(info.runtime)
    suffix = (cls.suffixes or (".bin",))[0]
    src = artefact_path(ctx, sha, suffix)
    work = Path(tempfile.mkdtemp(prefix="aqlexport-"))
    try:
        art = work / f"model{suffix}"
        shutil.copyfile(src, art)
        extra = {}
        for name, fsha in files.items():
            extra[name] = work / "x" / name
            extra[name].parent.mkdir(parents=True, exist_ok=True)
            extra[name].write_bytes(ctx.store.get_bytes(fsha))
        if out is None:
            out = Path(ctx.settings.data_dir) / "cache" / "packages" / \
                f"{info.name}-{info.version}{SUFFIX}"
        build_package(Path(out), art, info, extra_files=extra, lineage=lineage)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with ctx.session() as s:
        model = s.get(Model, model_id)
        model.package_sha256 = sha256_file(Path(out))
        s.flush()
        s.expunge(model)
    return Path(out), model


def import_package(ctx: Context, path: Path, owner_id: int, *,
                   visibility: str = "private") -> Model:
    """Register the model a package holds. Importing a package whose model (name, version) is
    already here with the same artefact returns that model; a different artefact is a Conflict."""
    from sqlalchemy import select

    from aqualens.catalog.tables import Model
    from aqualens.models.registry import register_model

    with open_package(path) as pkg:
        info = pkg.info
        with ctx.session() as s:
            existing = s.scalar(select(Model).where(Model.name == info.name,
                                                    Model.version == info.version))
            if existing is not None:
                if existing.artefact_sha256 != pkg.artefact_sha256:
                    raise Conflict(f"model {info.name} {info.version} exists here with a "
                                   "different artefact", field="version",
                                   valid="a package with a new version")
                s.expunge(existing)
                return existing
            lineage = pkg.meta.get("lineage") or {}
            model = register_model(s, ctx.store, pkg.artefact, info, owner_id,
                                   params=lineage.get("params") or {},
                                   extra_files=pkg.files, visibility=visibility)
            s.flush()
            s.expunge(model)
            return model


def read_package_bytes(data: bytes, name: str = "upload") -> ModelPackage:
    """Verify an uploaded package held in memory (API uploads)."""
    with tempfile.NamedTemporaryFile(suffix=SUFFIX, delete=False) as tmp:
        tmp.write(data)
    try:
        return open_package(Path(tmp.name))
    finally:
        Path(tmp.name).unlink(missing_ok=True)


def is_package(path: Path) -> bool:
    """True for a file that looks like a model package (by suffix or zip content)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix == SUFFIX:
        return True
    try:
        with zipfile.ZipFile(path) as zf:
            return MANIFEST in zf.namelist() and META in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


__all__ = ["FORMAT", "SUFFIX", "ModelPackage", "build_package", "export_package",
           "import_package", "open_package", "read_package_bytes", "is_package"]
