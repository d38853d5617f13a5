"""``aqualens fsck`` and ``aqualens tier`` from the command line, on both tiers."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select

from aqualens.catalog.collections import get_or_create_collection
from aqualens.catalog.tables import CollectionImage, Image
from aqualens.catalog.users import get_admin
from aqualens.cli.main import app
from tests.catalog.test_fsck import add_image, corrupt


@pytest.fixture
def cli(any_ctx, runner, monkeypatch):
    """Invoke the CLI on the ``any_ctx`` instance through its environment variables."""
    ctx, _ = any_ctx
    s = ctx.settings
    monkeypatch.setenv("AQUALENS_DATA_DIR", str(s.data_dir))
    if s.database_url:
        monkeypatch.setenv("AQUALENS_DATABASE_URL", s.database_url)
    if s.storage_url:
        monkeypatch.setenv("AQUALENS_STORAGE_URL", s.storage_url)
        monkeypatch.setenv("AQUALENS_S3__ENDPOINT_URL", s.s3.endpoint_url)
        monkeypatch.setenv("AQUALENS_S3__ACCESS_KEY", s.s3.access_key)
        monkeypatch.setenv("AQUALENS_S3__SECRET_KEY", s.s3.secret_key)

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return ctx, invoke


def test_fsck_clean(cli, tmp_path):
    ctx, invoke = cli
    add_image(ctx, b"fine", thumb=b"fine thumb")
    r = invoke("fsck", "--grace", "0", "--json", str(tmp_path / "report.json"))
    assert r.exit_code == 0, r.output
    assert "no problems" in r.output and "2 blobs" in r.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] is True and report["blobs"] == 2 and report["rows"] == 1


def test_fsck_problems_exit_1_and_repair(cli, tmp_path):
    ctx, invoke = cli
    add_image(ctx, b"fine")
    add_image(ctx, b"rotting")
    corrupt(ctx.store, hashlib.sha256(b"rotting").hexdigest(), b"rotten")
    orphan = ctx.store.put_bytes(b"orphan")

    r = invoke("fsck", "--grace", "0", "--json", str(tmp_path / "r.json"))
    assert r.exit_code == 1
    assert "corrupt" in r.output and "orphan" in r.output and "--repair" in r.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["counts"] == {"corrupt": 1, "orphan": 1}
    assert {p["sha256"] for p in report["problems"]} == {
        orphan, hashlib.sha256(b"rotting").hexdigest()}

    r = invoke("fsck", "--grace", "0", "--repair")
    assert r.exit_code == 1  # the corrupt blob cannot be repaired
    assert "repaired" in r.output and not ctx.store.exists(orphan)

    r = invoke("fsck", "--grace", "0", "--quick")
    assert r.exit_code == 0, r.output


def test_fsck_leaves_young_orphans_alone(cli):
    ctx, invoke = cli
    orphan = ctx.store.put_bytes(b"just written")
    r = invoke("fsck", "--repair")
    assert r.exit_code == 0 and "1 recent item(s) left alone" in r.output
    assert ctx.store.exists(orphan)


def test_tier_by_collection_and_image(cli):
    ctx, invoke = cli
    a, b, c = (add_image(ctx, d) for d in (b"a", b"b", b"c"))
    with ctx.session() as s:
        coll = get_or_create_collection(s, "cruise42", get_admin(s))
        s.add_all([CollectionImage(collection_id=coll.id, image_id=i) for i in (a, b)])

    r = invoke("tier", "--to", "archive", "--collection", "cruise42")
    assert r.exit_code == 0, r.output
    assert "2 moved to archive" in r.output
    with ctx.session() as s:
        assert dict(s.execute(select(Image.id, Image.tier)).all()) == {
            a: "archive", b: "archive", c: "active"}
    r = invoke("tier", "--to", "archive", "--collection", "cruise42")
    assert "0 moved" in r.output and "2 already there" in r.output

    r = invoke("tier", "--to", "active", "--image", str(a), "--image", str(c))
    assert r.exit_code == 0 and "1 moved to active, 1 already there" in r.output
    assert ctx.store.tier_of(hashlib.sha256(b"a").hexdigest()) == "active"
    assert invoke("fsck", "--grace", "0").exit_code == 0


@pytest.mark.parametrize(("args", "words"), [
    (["--to", "glacier", "--image", "1"], "tier"),
    (["--to", "archive"], "--collection"),
    (["--to", "archive", "--collection", "x", "--image", "1"], "--collection"),
    (["--to", "archive", "--collection", "no-such"], "no collection 'no-such'"),
    (["--to", "archive", "--image", "424242"], "unknown id"),
])
def test_tier_bad_input(cli, args, words):
    _, invoke = cli
    r = invoke("tier", *args)
    assert r.exit_code == 1
    assert words in r.output and "Traceback" not in r.output
