"""The ingest pipeline against a real catalogue and blob store."""

from __future__ import annotations

import threading
from datetime import datetime, UTC
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aqualens.catalog.tables import Collection, CollectionImage, Image, UsageEvent
from aqualens.core.errors import FormatError
from aqualens.ingest import hooks
from aqualens.ingest import report as R
from aqualens.ingest.pipeline import ingest_files, ingest_paths, resolve_collection
from tests.conftest import make_ctx, make_settings
from tests.ingest.helpers import (exif_with, image_folder, jpeg_bytes, make_tar, make_zip,
                                  png_bytes, write)


def _count(ctx, model) -> int:
    with ctx.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def _admin_id(ctx) -> int:
    from aqualens.catalog.users import get_admin

    with ctx.session() as s:
        return get_admin(s).id


def test_core_ingest_both_tiers(any_ctx, tmp_path: Path):
    """Folder + zip + tar + sidecar + rejections, on SQLite+local and PostgreSQL+S3."""
    ctx, _ = any_ctx
    owner = _admin_id(ctx)
    image_folder(tmp_path / "in", 3, sub="cam1")
    write(tmp_path / "in" / "cam1" / "broken.jpg", jpeg_bytes(50, size=(200, 200))[:300])
    write(tmp_path / "in" / "readme.jpg", b"not an image at all")
    exif = exif_with(dt="2020:02:03 04:05:06", lat=(10, 30, 0.0), lat_ref="N")
    write(tmp_path / "in" / "gps.jpg", jpeg_bytes(60, exif=exif))
    make_zip(tmp_path / "in" / "pack.zip", {"z/one.png": png_bytes(1), "../evil.jpg": png_bytes(2),
                                            "dup.jpg": jpeg_bytes(0)})
    make_tar(tmp_path / "in" / "pack.tar", {"/abs.jpg": png_bytes(3), "t.png": png_bytes(4)})
    sidecar = write(tmp_path / "meta.csv",
                    b"file,station,depth,lat,lon,datetime,operator\n"
                    b"cam1/img_0000.jpg,ST-1,12.5,45.0,7.0,2021-06-01T00:00:00Z,ann\n"
                    b"gps.jpg,ST-2,,,,,bob\n")
    report = ingest_paths(ctx, [tmp_path / "in"], collection="cruise", owner_id=owner,
                          metadata_file=sidecar)
    accepted = {a.name: a for a in report.accepted}
    assert set(accepted) == {"cam1/img_0000.jpg", "cam1/img_0001.jpg", "cam1/img_0002.jpg",
                             "gps.jpg", "z/one.png", "dup.jpg", "t.png"}
    # Files of a folder come before its sub-folders: the zip's dup.jpg is seen first.
    first, second = accepted["dup.jpg"], accepted["cam1/img_0000.jpg"]
    assert not first.duplicate and second.duplicate and not second.linked
    assert first.image_id == second.image_id
    codes = {r.name: r.code for r in report.rejected}
    assert codes == {"cam1/broken.jpg": R.TRUNCATED, "readme.jpg": R.NOT_AN_IMAGE,
                     "pack.zip:../evil.jpg": R.UNSAFE_PATH, "pack.tar:/abs.jpg": R.UNSAFE_PATH}
    assert report.new_images == 6 and report.linked == 6 and report.metadata_unmatched == 0
    with ctx.session() as s:
        img = s.get(Image, accepted["cam1/img_0000.jpg"].image_id)
        assert (img.station, img.depth, img.lat, img.lon) == ("ST-1", 12.5, 45.0, 7.0)
        assert img.captured_at.replace(tzinfo=UTC) == datetime(2021, 6, 1,
                                                                        tzinfo=UTC)
        assert img.meta["operator"] == "ann"
        assert "cam1/img_0000.jpg" in img.search_text and "st-1" in img.search_text
        gps = s.get(Image, accepted["gps.jpg"].image_id)
        assert gps.station == "ST-2" and gps.lat == pytest.approx(10.5)
        assert gps.captured_at.replace(tzinfo=UTC) == datetime(
            2020, 2, 3, 4, 5, 6, tzinfo=UTC)
        assert (gps.width, gps.height, gps.format) == (64, 48, "JPEG")
        for row in s.scalars(select(Image)):
            assert ctx.store.exists(row.sha256) and ctx.store.exists(row.thumb_sha256)
        assert s.scalar(select(func.count()).select_from(CollectionImage)) == 6
    # Re-running changes nothing.
    again = ingest_paths(ctx, [tmp_path / "in"], collection="cruise", owner_id=owner,
                         metadata_file=sidecar)
    assert again.linked == 0 and again.new_images == 0 and len(again.accepted) == 7
    assert _count(ctx, Image) == 6 and _count(ctx, CollectionImage) == 6


def test_dedup_across_collections_and_usage(ctx, tmp_path: Path):
    owner = _admin_id(ctx)
    image_folder(tmp_path / "a", 4)
    r1 = ingest_paths(ctx, [tmp_path / "a"], collection="one", owner_id=owner)
    r2 = ingest_paths(ctx, [tmp_path / "a"], collection="two", owner_id=owner)
    assert r1.new_images == 4 and r2.new_images == 0 and r2.duplicates == 4 and r2.linked == 4
    assert _count(ctx, Image) == 4 and _count(ctx, CollectionImage) == 8
    blobs = list(ctx.store.iter_blobs())
    assert len(blobs) == 8  # 4 originals + 4 thumbnails, each stored once
    with ctx.session() as s:
        events = s.scalars(select(UsageEvent).where(UsageEvent.kind == "ingest")
                           .order_by(UsageEvent.id)).all()
        assert [(e.user_id, e.images) for e in events] == [(owner, 4), (owner, 4)]
        assert events[0].bytes == sum(p.stat().st_size for p in (tmp_path / "a").iterdir())
        assert events[0].details["new_images"] == 4 and events[1].details["duplicates"] == 4


def test_good_files_go_in_when_others_rejected(tmp_path: Path):
    settings = make_settings(tmp_path / "data", limits={"max_file_bytes": 3000,
                                                        "max_image_pixels": 50_000})
    ctx, _ = make_ctx(settings)
    owner = _admin_id(ctx)
    small = write(tmp_path / "in" / "small.png", png_bytes(1))
    big = write(tmp_path / "in" / "big.jpg", jpeg_bytes(2, size=(400, 400), quality=100))
    bomb = write(tmp_path / "in" / "bomb.png", png_bytes(3, size=(300, 200)))
    report = ingest_files(ctx, [("small.png", small), ("big.jpg", big), ("bomb.png", bomb)],
                          collection_id=resolve_collection(ctx, "c", owner), owner_id=owner)
    assert [a.name for a in report.accepted] == ["small.png"]
    codes = {r.name: r.code for r in report.rejected}
    assert codes == {"big.jpg": R.TOO_LARGE, "bomb.png": R.TOO_MANY_PIXELS}
    assert _count(ctx, Image) == 1


def test_bad_sidecar_stops_before_storing(ctx, tmp_path: Path):
    image_folder(tmp_path / "in", 2)
    bad = write(tmp_path / "m.csv", b"file,lat\nimg_0000.jpg,north\n")
    with pytest.raises(FormatError) as e:
        ingest_paths(ctx, [tmp_path / "in"], collection="c", owner_id=_admin_id(ctx),
                     metadata_file=bad)
    assert e.value.field == "m.csv row 2 column 'lat'"
    assert _count(ctx, Image) == 0 and not list(ctx.store.iter_blobs())


def test_sidecar_updates_own_images_exif_only_fills(ctx, tmp_path: Path):
    owner = _admin_id(ctx)
    exif = exif_with(dt="2020:01:01 00:00:00", make="Deep", model="Cam")
    write(tmp_path / "in" / "e.jpg", jpeg_bytes(1, exif=exif))
    ingest_paths(ctx, [tmp_path / "in"], collection="c", owner_id=owner)
    side = write(tmp_path / "m.csv", b"file,instrument,depth,site_note\ne.jpg,UVP6,40,fixed\n")
    ingest_paths(ctx, [tmp_path / "in"], collection="c", owner_id=owner, metadata_file=side)
    with ctx.session() as s:
        img = s.scalar(select(Image))
        assert (img.instrument, img.depth) == ("UVP6", 40.0)  # sidecar overwrote EXIF camera
        assert img.meta["site_note"] == "fixed" and img.meta["exif"]["camera"] == "Deep Cam"
        assert img.captured_at is not None


def test_public_flag_and_hooks(ctx, tmp_path: Path):
    owner = _admin_id(ctx)
    seen: list[tuple[int, list[int]]] = []

    def listener(_ctx, collection_id, image_ids):
        seen.append((collection_id, image_ids))

    def broken(*_a):
        raise RuntimeError("listener bug")

    hooks.add_listener(broken)
    hooks.add_listener(listener)
    try:
        image_folder(tmp_path / "in", 3)
        r = ingest_paths(ctx, [tmp_path / "in"], collection="pub", owner_id=owner,
                         visibility="public")
        ingest_paths(ctx, [tmp_path / "in"], collection="pub", owner_id=owner)
    finally:
        hooks.remove_listener(listener)
        hooks.remove_listener(broken)
    assert seen == [(r.collection_id, sorted(a.image_id for a in r.accepted))]
    with ctx.session() as s:
        assert s.get(Collection, r.collection_id).visibility == "public"
        assert {i.visibility for i in s.scalars(select(Image))} == {"public"}


def test_concurrent_ingests_of_same_content(ctx, tmp_path: Path):
    """Two ingests race on the same sha256s: one row per content, both collections complete."""
    owner = _admin_id(ctx)
    image_folder(tmp_path / "in", 30)
    cids = [resolve_collection(ctx, f"c{i}", owner) for i in range(2)]
    files = sorted((p.name, p) for p in (tmp_path / "in").iterdir())
    reports: list = [None, None]

    def run(i: int) -> None:
        reports[i] = ingest_files(ctx, files, collection_id=cids[i], owner_id=owner)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(r.accepted) == 30 and not r.rejected for r in reports)
    assert _count(ctx, Image) == 30 and _count(ctx, CollectionImage) == 60
