"""CLI: search (table/json/csv, cursor, facets, errors), collections, labels, images."""

from __future__ import annotations

import json

import pytest

from aqualens.cli.main import app
from aqualens.core.config import reset_settings


@pytest.fixture
def cli(ctx, runner, monkeypatch):  # noqa: ANN001, ANN201
    """Invoke the CLI against the test instance; returns (invoke, seeded image ids)."""
    from tests.api.helpers import seed

    ids = seed(ctx, 3, collection="cruise", instrument="UVP6", meta={"cruise": "ATL42"})
    ids += seed(ctx, 1, collection="other", instrument="IFCB")
    monkeypatch.setenv("AQUALENS_DATA_DIR", str(ctx.settings.data_dir))
    reset_settings()

    def invoke(*args: str):  # noqa: ANN202
        return runner.invoke(app, list(args))

    return invoke, ids


def test_search_formats_and_paging(cli):
    invoke, ids = cli
    r = invoke("search", "--instrument", "UVP6", "--limit", "2", "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [i["id"] for i in out["items"]] == ids[:2] and out["next_cursor"]
    r = invoke("search", "--instrument", "UVP6", "--cursor", out["next_cursor"], "--format", "csv")
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("id,original_name") and lines[1].split(",")[0] == str(ids[2])
    r = invoke("search", "--text", "atl42", "--total")
    assert r.exit_code == 0 and "3 image(s)" in r.stdout
    r = invoke("search", "--all", "--format", "json")
    assert [i["id"] for i in json.loads(r.stdout)["items"]] == ids
    r = invoke("search", "--facets", "--format", "json")
    f = json.loads(r.stdout)
    assert {e["value"]: e["count"] for e in f["instrument"]} == {"UVP6": 3, "IFCB": 1}


@pytest.mark.parametrize(("args", "word"), [
    (["--bbox", "1,2,3"], "bbox"), (["--cursor", "nope"], "cursor"),
    (["--label", "Unicornus"], "label"), (["--from", "someday"], "captured_from"),
    (["--limit", "0"], "limit"), (["--format", "xml"], "format"),
])
def test_search_errors(cli, args, word):
    invoke, _ = cli
    r = invoke("search", *args)
    assert r.exit_code != 0 and word in r.output, r.output


def test_collections_labels_images(cli, ctx):
    invoke, ids = cli
    r = invoke("collections", "create", "empty", "--public", "--description", "nothing yet")
    assert r.exit_code == 0, r.output
    r = invoke("collections", "list", "--format", "json")
    counts = {c["name"]: c["image_count"] for c in json.loads(r.stdout)}
    assert counts == {"cruise": 3, "other": 1, "empty": 0}
    r = invoke("collections", "show", "cruise", "--format", "json")
    assert json.loads(r.stdout)["facets"]["instrument"][0]["value"] == "UVP6"
    assert invoke("collections", "show", "nope").exit_code == 1
    r = invoke("labels", "add", "Copepoda", "--aphia-id", "1080", "--synonym", "copepods")
    assert r.exit_code == 0 and "1080" in r.output
    assert invoke("labels", "add", "Copepoda").exit_code == 1
    r = invoke("labels", "list", "--format", "csv")
    assert "Copepoda,1080" in r.stdout
    r = invoke("images", "show", str(ids[0]), "--format", "json")
    assert json.loads(r.stdout)["collections"] == ["cruise"]
    r = invoke("images", "show", "abc")
    assert r.exit_code == 1 and "image_id" in r.output
    r = invoke("images", "delete", str(ids[3]), "--yes")
    assert r.exit_code == 0 and "2 blob(s) freed" in r.output
    r = invoke("collections", "delete", "cruise", "--yes")
    assert r.exit_code == 0 and "3 image(s) deleted" in r.output, r.output
    assert json.loads(invoke("search", "--format", "json").stdout)["items"] == []
