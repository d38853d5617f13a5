"""CLI: datasets freeze/list/show/diff/export, train (with progress), evaluate."""

from __future__ import annotations

import json

from aqualens.catalog.context import Context
from aqualens.catalog.users import get_admin
from aqualens.cli.main import app
from aqualens.core.config import get_settings
from tests.training.helpers import make_classify_collection


def test_datasets_train_evaluate(runner, tmp_path):
    r = runner.invoke(app, ["collections", "list"])       # creates the instance
    ctx = Context(get_settings())
    with ctx.session() as s:
        admin = get_admin(s)
        s.expunge(admin)
    make_classify_collection(ctx, admin, n=30)
    r = runner.invoke(app, ["datasets", "freeze", "vig", "--collection", "vignettes",
                            "--split", "80/10/10", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "vig@1" in r.output
    r = runner.invoke(app, ["datasets", "list", "--format", "json"])
    assert json.loads(r.output)[0]["ref"] == "vig@1"
    r = runner.invoke(app, ["datasets", "show", "vig@1", "--format", "json"])
    assert json.loads(r.output)["verified"] is True
    (tmp_path / "test.txt").write_text("disc_000.png\nhbar_001.png\n")
    (tmp_path / "train.txt").write_text("\n".join(f"{['disc', 'hbar', 'vbar'][i % 3]}_{i:03d}.png"
                                                  for i in range(2, 30)))
    r = runner.invoke(app, ["datasets", "freeze", "vig", "--collection", "vignettes",
                            "--split-file", f"train={tmp_path / 'train.txt'}",
                            "--split-file", f"test={tmp_path / 'test.txt'}", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["splits"] == {"train": 28, "test": 2}
    r = runner.invoke(app, ["datasets", "diff", "vig@1", "vig@2", "--format", "json"])
    assert json.loads(r.output)["split_moves"] > 0
    r = runner.invoke(app, ["datasets", "export", "vig@1", "--out", str(tmp_path / "e")])
    assert r.exit_code == 0 and (tmp_path / "e" / "manifest.json").exists()
    r = runner.invoke(app, ["train", "--dataset", "vig@1", "--epochs", "2", "--input-size", "32",
                            "--batch-size", "8"], env={"OMP_NUM_THREADS": "1"})
    assert r.exit_code == 0, r.output
    assert "vig-classify@1.0.0" in r.output and "epoch" in r.output.lower()
    r = runner.invoke(app, ["evaluate", "--model", "vig-classify@1.0.0", "--dataset", "vig@1",
                            "--split", "val", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert "accuracy" in json.loads(r.output)["overall"]
    # bad input: one clear line, exit 1
    r = runner.invoke(app, ["train", "--dataset", "vig@1", "--device", "tpu"])
    assert r.exit_code == 1 and "device" in r.output
    r = runner.invoke(app, ["datasets", "freeze", "x", "--collection", "vignettes",
                            "--split-file", "train"])
    assert r.exit_code == 1 and "SPLIT=FILE" in r.output
    r = runner.invoke(app, ["datasets", "show", "nope@1"])
    assert r.exit_code == 1 and "no dataset version" in r.output
