"""``aqualens ingest`` and ``aqualens demo`` through the Typer runner."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from aqualens.catalog.context import Context
from aqualens.catalog.tables import Collection, CollectionImage, Image
from aqualens.cli.main import app
from aqualens.core.config import get_settings
from tests.conftest import DEMO
from tests.ingest.helpers import image_folder, jpeg_bytes, make_zip, write


def _ctx() -> Context:
    return Context(get_settings())


def test_ingest_summary_report_and_exit_codes(runner, tmp_path: Path):
    image_folder(tmp_path / "in", 3)
    side = write(tmp_path / "m.csv", b"pic,where\nimg_0001.jpg,Pier 7\n")
    result = runner.invoke(app, ["ingest", str(tmp_path / "in"), "--collection", "c1",
                                 "--metadata", str(side), "--map", "file=pic",
                                 "--map", "station=where", "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "3 accepted (3 new" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["accepted"] == 3 and report["collection"] == "c1"
    with _ctx().session() as s:
        assert s.scalar(select(Image.station).where(Image.original_name == "img_0001.jpg")) \
            == "Pier 7"

    # Some rejected: exit 2, reasons printed.
    write(tmp_path / "in" / "bad.jpg", jpeg_bytes(9, size=(100, 100))[:200])
    make_zip(tmp_path / "evil.zip", {"../evil.jpg": jpeg_bytes(10)})
    result = runner.invoke(app, ["ingest", str(tmp_path / "in"), str(tmp_path / "evil.zip"),
                                 "-c", "c1"])
    assert result.exit_code == 2, result.output
    assert "0 new, 3 duplicates" in result.output
    assert "bad.jpg" in result.output and "truncated" in result.output
    assert "evil.zip:../evil.jpg" in result.output

    # Nothing readable: exit 1.
    write(tmp_path / "junk" / "a.jpg", b"nope")
    result = runner.invoke(app, ["ingest", str(tmp_path / "junk"), "-c", "c1"])
    assert result.exit_code == 1


def test_ingest_bad_map_and_bad_sidecar(runner, tmp_path: Path):
    image_folder(tmp_path / "in", 1)
    result = runner.invoke(app, ["ingest", str(tmp_path / "in"), "-c", "c", "--map", "x=y"])
    assert result.exit_code == 1 and "unknown field 'x'" in result.output
    bad = write(tmp_path / "m.csv", b"file,lat\nimg_0000.jpg,91\n")
    result = runner.invoke(app, ["ingest", str(tmp_path / "in"), "-c", "c", "-m", str(bad)])
    assert result.exit_code == 1
    assert "m.csv row 2 column 'lat'" in result.output


def test_ingest_public(runner, tmp_path: Path):
    image_folder(tmp_path / "in", 1)
    assert runner.invoke(app, ["ingest", str(tmp_path / "in"), "-c", "pub", "--public"]
                         ).exit_code == 0
    with _ctx().session() as s:
        assert s.scalar(select(Collection.visibility).where(Collection.name == "pub")) == "public"


def _reference_models(folder: Path) -> Path:
    """A folder like the repo's models/: one tiny valid package and one broken file."""
    from aqualens.models.base import ModelInfo
    from aqualens.models.package import build_package
    from tests.models.nets import classifier_info, export_classifier

    (folder / "build").mkdir()
    onnx_path, _ = export_classifier(folder / "build")
    build_package(folder / "models" / "tiny-reference.aqlmodel", onnx_path,
                  ModelInfo.from_dict(classifier_info("tiny-reference", "1.0.0")))
    write(folder / "models" / "broken.aqlmodel", b"not a zip")
    return folder / "models"


def test_demo_is_idempotent(runner, tmp_path: Path):
    from aqualens.catalog.tables import Model

    models = _reference_models(tmp_path)
    result = runner.invoke(app, ["demo", "--path", str(DEMO), "--models", str(models)])
    assert result.exit_code == 0, result.output
    assert "tiny-reference.aqlmodel: imported as tiny-reference@1.0.0" in result.output
    assert "broken.aqlmodel: skipped: not a readable model package" in result.output
    with _ctx().session() as s:
        rows = s.execute(select(Model.name, Model.visibility)).all()
        assert [tuple(r) for r in rows] == [("tiny-reference", "public")]
    assert "aql_" in result.output  # the admin token, once
    with _ctx().session() as s:
        counts = dict(s.execute(select(Collection.name, func.count())
                                .join(CollectionImage).group_by(Collection.name)).all())
        assert counts == {"uvp6-demo": 40, "deepfish-demo": 20, "ecotaxa-demo": 5}
        assert set(s.scalars(select(Collection.visibility))) == {"public"}
        cop = s.scalar(select(Image).where(Image.original_name.like("Copepoda%")))
        assert cop.instrument == "UVP6" and cop.station.startswith("LIG-") and cop.depth
        assert "copepoda" in cop.search_text
        eco = s.scalar(select(Image).where(Image.original_name == "m106_mn01_n1_sml_409.jpg"))
        assert eco.lat == -44.72543333333333 and eco.instrument == "epson"
    again = runner.invoke(app, ["demo", "--path", str(DEMO), "--models", str(models)])
    assert again.exit_code == 0 and again.output.count("already ingested") == 3
    assert "aql_" not in again.output
    assert "tiny-reference.aqlmodel: already registered" in again.output
    with _ctx().session() as s:
        assert s.scalar(select(func.count()).select_from(Model)) == 1


def test_demo_missing_folder(runner, tmp_path: Path):
    result = runner.invoke(app, ["demo", "--path", str(tmp_path)])
    assert result.exit_code == 1 and "no demo sample" in result.output
