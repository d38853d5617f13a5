"""Registry and model packages: round trip between two instances, tampering refused, offline
predict with no catalogue."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from aqualens.catalog.users import get_admin
from aqualens.core.errors import Conflict, IntegrityError, NotFound, ValidationError
from aqualens.models import registry, warm
from aqualens.models.package import export_package, import_package, open_package
from tests.conftest import make_ctx, make_settings
from tests.models.nets import png_bytes, register_classifier


def _rewrite(src: Path, dst: Path, change) -> None:  # noqa: ANN001
    """Copy a zip member by member, letting ``change(name, data)`` alter or drop members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            out = change(info.filename, zin.read(info.filename))
            if out is not None:
                zout.writestr(info.filename, out)


def test_registry_semver_visibility_and_warm_cache(ctx, tmp_path) -> None:  # noqa: ANN001
    mid = register_classifier(ctx, tmp_path)
    register_classifier(ctx, tmp_path, version="1.10.0")
    register_classifier(ctx, tmp_path, version="1.2.0-rc.1")
    with ctx.session() as s:
        admin = get_admin(s)
        assert registry.get_model(s, "tiny-plankton", admin).version == "1.10.0"
        assert registry.get_model(s, "tiny-plankton@1.0.0", admin).id == mid
        # private by default: anonymous readers do not see it
        with pytest.raises(NotFound):
            registry.get_model(s, mid, None)
        registry.update_model(s, mid, admin, visibility="public")
        assert registry.get_model(s, mid, None).visibility == "public"
        with pytest.raises(ValidationError, match="cannot change labels"):
            registry.update_model(s, mid, admin, labels=[])
    with ctx.session() as s, pytest.raises(Conflict, match="exists already"):
        from aqualens.models.base import ModelInfo
        from tests.models.nets import classifier_info, export_classifier

        registry.register_model(s, ctx.store, export_classifier(tmp_path)[0],
                                ModelInfo.from_dict(classifier_info()), get_admin(s).id)
    a = warm.load_runtime(ctx, mid)
    assert warm.load_runtime(ctx, mid) is a   # warm: loaded once per process


def test_package_round_trip_between_instances(ctx, tmp_path, runner) -> None:  # noqa: ANN001
    mid = register_classifier(ctx, tmp_path)
    pkg, model = export_package(ctx, mid, _admin(ctx), tmp_path / "m.aqlmodel")
    pkg2, _ = export_package(ctx, mid, _admin(ctx), tmp_path / "again.aqlmodel")
    assert pkg.read_bytes() == pkg2.read_bytes()          # deterministic packages
    other, _ = make_ctx(make_settings(tmp_path / "other"))
    with other.session() as s:
        owner = get_admin(s).id
    imported = import_package(other, pkg, owner)
    assert imported.artefact_sha256 == model.artefact_sha256
    assert (imported.name, imported.version, imported.labels) == \
        (model.name, model.version, model.labels)
    # importing again is idempotent
    assert import_package(other, pkg, owner).id == imported.id
    a = warm.load_runtime(ctx, mid)
    b = warm.load_runtime(other, imported.id)
    from tests.models.nets import colour_image

    img = [colour_image((0, 255, 0))]
    assert a.predict(img)[0] == b.predict(img)[0]


def _admin(ctx):  # noqa: ANN001, ANN202
    with ctx.session() as s:
        u = get_admin(s)
        s.expunge(u)
        return u


@pytest.fixture
def package(ctx, tmp_path) -> Path:  # noqa: ANN001
    mid = register_classifier(ctx, tmp_path)
    return export_package(ctx, mid, _admin(ctx), tmp_path / "m.aqlmodel")[0]


def test_tampered_packages_refused(package, tmp_path) -> None:  # noqa: ANN001
    cases = {
        "changed": (lambda n, d: d + b"x" if n.startswith("artefact/") else d,
                    r"'artefact/model.onnx' does not match its checksum"),
        "missing": (lambda n, d: None if n == "card.md" else d, "'card.md' is missing"),
        "no-manifest": (lambda n, d: None if n == "MANIFEST.sha256" else d,
                        "lacks its checksum manifest"),
        "meta": (lambda n, d: d.replace(b'"1.0.0"', b'"9.0.0"') if n == "aqualens-model.json"
                 else d, "'aqualens-model.json' does not match its checksum"),
    }
    for name, (change, message) in cases.items():
        bad = tmp_path / f"{name}.aqlmodel"
        _rewrite(package, bad, change)
        with pytest.raises(IntegrityError, match=message):
            open_package(bad)
    extra = tmp_path / "extra.aqlmodel"
    _rewrite(package, extra, lambda n, d: d)
    with zipfile.ZipFile(extra, "a") as z:
        z.writestr("evil.py", b"print(1)")
    with pytest.raises(IntegrityError, match="'evil.py' is not in MANIFEST"):
        open_package(extra)
    slip = tmp_path / "slip.aqlmodel"
    with zipfile.ZipFile(slip, "w") as z:
        z.writestr("../../etc/x", b"x")
    with pytest.raises(IntegrityError, match="unsafe path"):
        open_package(slip)
    junk = tmp_path / "junk.aqlmodel"
    junk.write_bytes(package.read_bytes()[:200])
    with pytest.raises(IntegrityError, match="not a valid model package"):
        open_package(junk)


def test_offline_predict_cli(package, tmp_path, runner, monkeypatch) -> None:  # noqa: ANN001
    from aqualens.cli.main import app

    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    (imgs / "red.png").write_bytes(png_bytes((250, 0, 0)))
    (imgs / "sub" / "blue.png").write_bytes(png_bytes((0, 0, 250)))
    (imgs / "notes.txt").write_text("ignored: not an image suffix")
    (imgs / "broken.png").write_bytes(b"not a png")
    # no catalogue: point the data dir at a folder that must stay empty
    empty = tmp_path / "no-instance"
    monkeypatch.setenv("AQUALENS_DATA_DIR", str(empty))
    out = tmp_path / "results.csv"
    r = runner.invoke(app, ["predict", "--model", str(package), str(imgs), "--out", str(out),
                            "--top-k", "1"])
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("file,width,height,rank,label,aphia_id,score")
    body = "\n".join(lines[1:])
    assert "red.png,64,48,1,Calanoida,1100" in body and "blue.png,64,48,1,detritus,," in body
    assert "broken.png" in body and "not a readable image" in body
    assert not empty.exists()
    jout = tmp_path / "results.json"
    r = runner.invoke(app, ["predict", "--model", str(package), str(imgs / "red.png"),
                            "--out", str(jout)])
    assert r.exit_code == 0, r.output
    data = json.loads(jout.read_text())
    assert data["model"]["pid"].startswith("sha256:") and \
        data["results"][0]["result"]["top"][0]["label"] == "Calanoida"
    # a tampered package is refused by the CLI with the member named
    bad = tmp_path / "bad.aqlmodel"
    _rewrite(package, bad, lambda n, d: d + b"!" if n == "labels.json" else d)
    r = runner.invoke(app, ["predict", "--model", str(bad), str(imgs), "--out", str(out)])
    assert r.exit_code == 1 and "labels.json" in r.output


def test_cli_models_commands(ctx, tmp_path, runner, monkeypatch) -> None:  # noqa: ANN001
    from aqualens.cli.main import app
    from tests.models.nets import LABELS, export_classifier

    monkeypatch.setenv("AQUALENS_DATA_DIR", str(ctx.settings.data_dir))
    onnx_path, _ = export_classifier(tmp_path)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(LABELS))
    r = runner.invoke(app, ["models", "add", str(onnx_path), "--name", "cli-model", "--version",
                            "0.1.0", "--labels", str(labels), "--input-spec",
                            '{"height": 32, "width": 32}', "--licence", "CC0-1.0"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["models", "add", str(onnx_path), "--name", "cli-model",
                            "--version", "one"])
    assert r.exit_code == 1 and "semantic version" in r.output
    r = runner.invoke(app, ["models", "list", "--format", "json"])
    assert json.loads(r.output)[0]["name"] == "cli-model"
    pkg = tmp_path / "cli.aqlmodel"
    assert runner.invoke(app, ["models", "export", "cli-model", "--out", str(pkg)]).exit_code == 0
    assert runner.invoke(app, ["models", "publish", "cli-model"]).exit_code == 0
    r = runner.invoke(app, ["models", "show", "cli-model@0.1.0"])
    assert json.loads(r.output)["visibility"] == "public"
    assert runner.invoke(app, ["models", "delete", "cli-model", "--yes"]).exit_code == 0
    r = runner.invoke(app, ["models", "import", str(pkg)])
    assert r.exit_code == 0 and "cli-model 0.1.0" in r.output
    r = runner.invoke(app, ["models", "show", "nope"])
    assert r.exit_code == 1 and "no model 'nope'" in r.output
