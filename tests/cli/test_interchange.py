"""CLI: aqualens import / export / formats / labels import-taxa."""

from __future__ import annotations

import json

from aqualens.cli.main import app
from tests.interchange.helpers import make_image


def _csv(tmp_path, rows):  # noqa: ANN001, ANN202
    make_image(tmp_path / "src" / "a.png", 32, 32, seed=3)
    (tmp_path / "src" / "annotations.csv").write_text(
        "image,label,geometry_type,geometry\n" + "\n".join(rows) + "\n")
    return tmp_path / "src"


def test_formats_lists_every_builtin(runner):
    r = runner.invoke(app, ["formats", "--format", "json"])
    assert r.exit_code == 0
    names = {row["name"] for row in json.loads(r.stdout)}
    assert names >= {"coco", "voc", "yolo", "masks", "folders", "ecotaxa", "dwca", "csv"}


def test_import_refused_then_partial_then_export(runner, tmp_path):
    src = _csv(tmp_path, ['a.png,Fish,box,"[1, 1, 4, 4]"', 'a.png,Fish,box,"[1, 1, -4, 4]"'])
    report = tmp_path / "r.json"
    r = runner.invoke(app, ["import", "--format", "csv", str(src), "--collection", "c",
                            "--report", str(report)])
    assert r.exit_code == 1
    assert "annotations.csv:line 3" in r.stderr and "refused" in r.stderr
    data = json.loads(report.read_text())
    assert data["refused"] and data["problems"][0]["location"] == "line 3"
    r = runner.invoke(app, ["import", "-f", "csv", str(src), "-c", "c", "--partial"])
    assert r.exit_code == 2, r.stderr
    r = runner.invoke(app, ["export", "-f", "coco", "-c", "c", str(tmp_path / "out.zip")])
    assert r.exit_code == 0, r.stderr
    assert "exported 1 annotations on 1 images" in r.stdout
    r = runner.invoke(app, ["export", "-f", "yolo", "--query", "label=Fish",
                            str(tmp_path / "q")])
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "q" / "data.yaml").is_file()


def test_bad_flags_and_files(runner, tmp_path):
    src = _csv(tmp_path, ['a.png,Fish,none,'])
    r = runner.invoke(app, ["import", "-f", "csv", str(src), "-c", "c", "--on-outside", "warp"])
    assert r.exit_code == 1 and "on_outside" in r.stderr
    r = runner.invoke(app, ["import", "-f", "nope", str(src), "-c", "c"])
    assert r.exit_code == 1 and "nope" in r.stderr
    (tmp_path / "bad.json").write_text("[1,")
    r = runner.invoke(app, ["import", "-f", "coco", str(tmp_path / "bad.json"), "-c", "c"])
    assert r.exit_code == 1 and "bad.json" in r.stderr


def test_labels_import_taxa(runner, tmp_path):
    f = tmp_path / "taxa.csv"
    f.write_text("name,aphia_id,synonyms\nCopepoda,1080,copepod\n")
    r = runner.invoke(app, ["labels", "import-taxa", str(f)])
    assert r.exit_code == 0, r.stderr
    assert "1 labels created" in r.stdout and "1 synonyms" in r.stdout
