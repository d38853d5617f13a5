"""fsck and tier moves on both tiers: corrupt, missing, orphan, temp, tier mismatch, repair."""

from __future__ import annotations

import hashlib
import os

import pytest
from sqlalchemy import func, select

from aqualens.catalog.fsck import fsck, move_images, register_references
from aqualens.catalog.fsck import _sources as reference_sources
from aqualens.catalog.tables import Image, Job, Model
from aqualens.catalog.users import create_user, get_admin
from aqualens.core.errors import PermissionDenied, ValidationError
from aqualens.storage.local import LocalBlobStore


def add_image(ctx, data: bytes, *, thumb: bytes | None = None, owner_id=None) -> int:
    """An image row with its blob (and thumbnail blob) in the store."""
    store = ctx.store
    sha = store.put_bytes(data)
    thumb_sha = store.put_bytes(thumb) if thumb is not None else None
    with ctx.session() as s:
        owner_id = owner_id or get_admin(s).id
        row = Image(sha256=sha, size=len(data), width=1, height=1, format="jpeg",
                    thumb_sha256=thumb_sha, owner_id=owner_id)
        s.add(row)
        s.flush()
        return row.id


def add_model(ctx, artefact: bytes, package: bytes | None = None) -> int:
    store = ctx.store
    with ctx.session() as s:
        row = Model(name=f"m{os.urandom(3).hex()}", version="1", task="classify", runtime="onnx",
                    artefact_sha256=store.put_bytes(artefact),
                    package_sha256=store.put_bytes(package) if package else None,
                    owner_id=get_admin(s).id)
        s.add(row)
        s.flush()
        return row.id


def corrupt(store, key: str, data: bytes) -> None:
    """Overwrite a blob's bytes behind the store's back."""
    if isinstance(store, LocalBlobStore):
        store.local_path(key).write_bytes(data)
    else:
        store.client.put_object(Bucket=store.bucket, Key=store._key(key, store.require(key)),
                                Body=data)


def kinds(report) -> list[str]:
    return sorted(p.kind for p in report.problems)


def test_clean_instance(any_ctx):
    ctx, _ = any_ctx
    add_image(ctx, b"img1", thumb=b"thumb1")
    add_image(ctx, b"img2")
    add_model(ctx, b"weights", b"package")
    ticks = []
    report = fsck(ctx, grace=0, progress=lambda done, total: ticks.append((done, total)))
    assert report.ok, report.to_dict()
    assert report.blobs == 5 and report.verified == 5 and report.rows == 3
    assert ticks[-1] == (8, 8)
    assert report.to_dict()["ok"] is True and report.to_dict()["counts"] == {}


def test_corrupt_blob(any_ctx):
    ctx, _ = any_ctx
    add_image(ctx, b"good")
    add_image(ctx, b"will rot")
    corrupt(ctx.store, hashlib.sha256(b"will rot").hexdigest(), b"rotten")
    report = fsck(ctx, grace=0)
    assert kinds(report) == ["corrupt"]
    assert report.problems[0].sha256 == hashlib.sha256(b"will rot").hexdigest()
    assert not report.ok
    # quick mode does not re-hash
    assert fsck(ctx, grace=0, verify=False).ok
    # repair never deletes a referenced blob, even a corrupt one
    assert not fsck(ctx, grace=0, repair=True).ok
    assert ctx.store.exists(hashlib.sha256(b"will rot").hexdigest())


def test_missing_blobs_name_row_and_column(any_ctx):
    ctx, _ = any_ctx
    image_id = add_image(ctx, b"pic", thumb=b"small pic")
    model_id = add_model(ctx, b"onnx bytes", b"zip bytes")
    for data in (b"pic", b"small pic", b"zip bytes"):
        ctx.store.delete(hashlib.sha256(data).hexdigest())
    report = fsck(ctx, grace=0, repair=True)
    missing = {(p.table, p.row_id, p.column) for p in report.of_kind("missing")}
    assert missing == {("images", image_id, "sha256"), ("images", image_id, "thumb_sha256"),
                       ("models", model_id, "package_sha256")}
    assert kinds(report) == ["missing"] * 3 and not report.ok
    assert "images row" in report.of_kind("missing")[0].message
    with ctx.session() as s:  # rows are never touched
        assert s.scalar(select(func.count()).select_from(Image)) == 1


def test_orphans_reported_and_repaired(any_ctx):
    ctx, _ = any_ctx
    add_image(ctx, b"kept")
    orphan = ctx.store.put_bytes(b"nobody wants me")
    archived_orphan = ctx.store.put_bytes(b"old and alone", tier="archive")

    young = fsck(ctx)  # default grace: a writer may be about to commit their rows
    assert young.ok and young.skipped_young == 2

    report = fsck(ctx, grace=0)
    assert {(p.sha256, p.tier) for p in report.of_kind("orphan")} == {
        (orphan, "active"), (archived_orphan, "archive")}
    assert ctx.store.exists(orphan)  # reporting deletes nothing

    repaired = fsck(ctx, grace=0, repair=True)
    assert repaired.ok and all(p.repaired for p in repaired.problems)
    assert len(repaired.problems) == 2
    assert not ctx.store.exists(orphan) and not ctx.store.exists(archived_orphan)
    assert ctx.store.exists(hashlib.sha256(b"kept").hexdigest())
    assert fsck(ctx, grace=0).problems == []


def test_hashes_in_job_outputs_are_not_orphans(any_ctx):
    ctx, _ = any_ctx
    export = ctx.store.put_bytes(b"an export zip")
    with ctx.session() as s:
        s.add(Job(id="j-1", kind="export", owner_id=get_admin(s).id,
                  outputs={"files": [{"name": "export.zip", "sha256": export}]}))
    report = fsck(ctx, grace=0, repair=True)
    assert report.ok and report.problems == []
    assert ctx.store.exists(export)


def test_registered_reference_source(any_ctx):
    ctx, _ = any_ctx
    needed = ctx.store.put_bytes(b"published package")
    gone = hashlib.sha256(b"lost").hexdigest()

    def source(session):
        yield needed, "packages", 7, "sha256"
        yield gone, "packages", 8, "sha256"

    register_references(source)
    try:
        report = fsck(ctx, grace=0, repair=True)
    finally:
        reference_sources.remove(source)
    assert [(p.kind, p.table, p.row_id) for p in report.problems] == [("missing", "packages", 8)]
    assert ctx.store.exists(needed)


def test_temp_files_reported_and_repaired(any_ctx):
    ctx, _ = any_ctx
    store = ctx.store
    if isinstance(store, LocalBlobStore):
        leftover = store.root / "tmp" / "tmpkilled"
        leftover.write_bytes(b"half a blob")
    else:  # a large upload killed half-way leaves an incomplete multipart upload
        up = store.client.create_multipart_upload(
            Bucket=store.bucket, Key=store._key("ab" * 32, "active"))
        store.client.upload_part(Bucket=store.bucket, Key=store._key("ab" * 32, "active"),
                                 UploadId=up["UploadId"], PartNumber=1, Body=b"part one")
    assert fsck(ctx).ok  # young: maybe still being written
    report = fsck(ctx, grace=0)
    assert kinds(report) == ["temp"] and not report.ok
    assert fsck(ctx, grace=0, repair=True).ok
    assert fsck(ctx, grace=0).problems == []
    if isinstance(store, LocalBlobStore):
        assert not leftover.exists()


def test_move_images_between_tiers(any_ctx):
    ctx, _ = any_ctx
    a = add_image(ctx, b"image a", thumb=b"thumb a")
    b = add_image(ctx, b"image b")
    report = move_images(ctx, [a, b, a, 999999], "archive")
    assert sorted(report.moved) == [a, b] and report.not_found == [999999]
    store = ctx.store
    assert store.tier_of(hashlib.sha256(b"image a").hexdigest()) == "archive"
    assert store.tier_of(hashlib.sha256(b"thumb a").hexdigest()) == "active"  # thumbs stay hot
    with ctx.session() as s:
        assert {i.tier for i in s.scalars(select(Image))} == {"archive"}
    assert fsck(ctx, grace=0).ok

    again = move_images(ctx, [a, b], "archive")  # safe to re-run
    assert again.moved == [] and sorted(again.unchanged) == [a, b]
    back = move_images(ctx, [a], "active")
    assert back.moved == [a]
    assert store.get_bytes(hashlib.sha256(b"image a").hexdigest()) == b"image a"
    assert fsck(ctx, grace=0).ok


def test_interrupted_move_is_reported_and_finished_by_rerun(any_ctx):
    ctx, _ = any_ctx
    image_id = add_image(ctx, b"half moved")
    key = hashlib.sha256(b"half moved").hexdigest()
    ctx.store.move(key, "archive")  # the store changed, the process died before the row did
    report = fsck(ctx, grace=0)
    assert kinds(report) == ["tier"]
    assert report.problems[0].row_id == image_id and "aqualens tier" in report.problems[0].message
    assert move_images(ctx, [image_id], "archive").moved == [image_id]
    assert fsck(ctx, grace=0).ok


def test_blob_in_both_tiers_is_a_duplicate(any_ctx):
    ctx, _ = any_ctx
    image_id = add_image(ctx, b"copied twice")
    key = hashlib.sha256(b"copied twice").hexdigest()
    store = ctx.store
    if isinstance(store, LocalBlobStore):  # a move that died between copy and delete
        dest = store.root / "archive" / key[:2] / key[2:4] / key
        dest.parent.mkdir(parents=True)
        dest.write_bytes(b"copied twice")
    else:
        store.client.put_object(Bucket=store.bucket, Key=store._key(key, "archive"),
                                Body=b"copied twice")
    report = fsck(ctx, grace=0)
    assert kinds(report) == ["duplicate"]
    move_images(ctx, [image_id], "archive")
    assert fsck(ctx, grace=0).ok
    assert list(store.iter_blobs()) == [(key, "archive")]


def test_move_images_checks_permissions_and_tier(any_ctx):
    ctx, _ = any_ctx
    image_id = add_image(ctx, b"admin's")
    with ctx.session() as s:
        eve = create_user(s, "eve")
        s.expunge(eve)
    with pytest.raises(PermissionDenied):
        move_images(ctx, [image_id], "archive", user=eve)
    with pytest.raises(ValidationError) as info:
        move_images(ctx, [image_id], "glacier")
    assert info.value.field == "tier"
    with ctx.session() as s:
        assert s.get(Image, image_id).tier == "active"


def test_move_image_without_blob(any_ctx):
    ctx, _ = any_ctx
    image_id = add_image(ctx, b"lost blob")
    ctx.store.delete(hashlib.sha256(b"lost blob").hexdigest())
    report = move_images(ctx, [image_id], "archive")
    assert report.missing == [image_id] and report.moved == []
    with ctx.session() as s:
        assert s.get(Image, image_id).tier == "active"
