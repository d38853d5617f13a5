"""Probing: header size, EXIF, draft thumbnails, and every reason to reject an image."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, UTC
from pathlib import Path

import pytest
from PIL import Image

from aqualens.ingest import report as R
from aqualens.ingest.probe import Rejected, make_thumbnail, probe_path, probe_source
from aqualens.ingest.sources import Source
from tests.ingest.helpers import exif_with, jpeg_bytes, png_bytes, write


def test_jpeg_header_sha_and_thumbnail(tmp_path: Path):
    data = jpeg_bytes(3, size=(1600, 900))
    p = probe_path(write(tmp_path / "a.jpg", data))
    assert p.sha256 == hashlib.sha256(data).hexdigest()
    assert (p.format, p.width, p.height, p.size) == ("JPEG", 1600, 900, len(data))
    thumb = Image.open(io.BytesIO(p.thumbnail))
    assert thumb.format == "JPEG"
    assert max(thumb.size) == 256 and thumb.size == (256, 144)
    assert p.captured_at is None and p.lat is None


def test_thumbnail_uses_draft_reduced_decoding():
    img = Image.open(io.BytesIO(jpeg_bytes(1, size=(2048, 1024))))
    make_thumbnail(img, 256)
    # draft() made libjpeg decode at 1/8 scale: the decoded image is 256x128, not 2048x1024.
    assert img.size == (256, 128)
    assert img.decoderconfig[0] == 8  # the DCT scale used


def test_small_image_thumbnail_not_enlarged(tmp_path: Path):
    p = probe_path(write(tmp_path / "s.png", png_bytes(1, size=(40, 30))))
    assert Image.open(io.BytesIO(p.thumbnail)).size == (40, 30)


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16", "P"])
def test_thumbnail_from_unusual_modes(tmp_path: Path, mode: str):
    img = Image.new("RGBA" if mode == "P" else mode, (300, 200))
    if mode == "P":
        img = img.convert("P")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    p = probe_path(write(tmp_path / "m.png", buf.getvalue()))
    assert Image.open(io.BytesIO(p.thumbnail)).size == (256, 171)


def test_exif_datetime_gps_camera_depth(tmp_path: Path):
    exif = exif_with(dt="2021:06:01 12:30:45", lat=(43, 25, 30.0), lat_ref="S",
                     lon=(7, 52, 12.0), lon_ref="W", depth=35.5)
    p = probe_path(write(tmp_path / "e.jpg", jpeg_bytes(1, exif=exif)))
    assert p.captured_at == datetime(2021, 6, 1, 12, 30, 45, tzinfo=UTC)
    assert p.lat == pytest.approx(-(43 + 25 / 60 + 30 / 3600), abs=1e-6)
    assert p.lon == pytest.approx(-(7 + 52 / 60 + 12 / 3600), abs=1e-6)
    assert p.depth == pytest.approx(35.5)
    assert p.instrument == "SubSea Cam 3"
    assert p.exif["DateTimeOriginal"] == "2021:06:01 12:30:45"


def test_exif_offset_time(tmp_path: Path):
    exif = exif_with()
    exif.get_ifd(0x8769)[0x9011] = "+02:00"
    p = probe_path(write(tmp_path / "e.jpg", jpeg_bytes(1, exif=exif)))
    assert p.captured_at.isoformat() == "2021-06-01T12:30:45+02:00"


def _reject(tmp_path: Path, data: bytes, name: str = "x.jpg", **kw) -> Rejected:
    path = write(tmp_path / name, data)
    with pytest.raises(Rejected) as info:
        probe_source(Source(name=name, size=len(data), path=path),
                     max_pixels=kw.get("max_pixels", 10**8), thumb_size=256)
    return info.value


def test_not_an_image(tmp_path: Path):
    rej = _reject(tmp_path, b"this is text, not pixels\n" * 20, "notes.jpg")
    assert rej.code == R.NOT_AN_IMAGE and "not an image" in rej.reason


def test_empty_file(tmp_path: Path):
    assert _reject(tmp_path, b"", "empty.jpg").code == R.NOT_AN_IMAGE


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.98])
def test_truncated_jpeg(tmp_path: Path, keep: float):
    data = jpeg_bytes(5, size=(640, 480), quality=95)
    rej = _reject(tmp_path, data[: int(len(data) * keep)])
    assert rej.code == R.TRUNCATED and "truncated" in rej.reason


def test_truncated_png(tmp_path: Path):
    img = Image.effect_noise((300, 300), 50).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = buf.getvalue()
    assert _reject(tmp_path, data[: len(data) // 2], "t.png").code == R.TRUNCATED


def test_decompression_bomb_checked_before_decoding(tmp_path: Path):
    rej = _reject(tmp_path, jpeg_bytes(1, size=(200, 100)), max_pixels=19_999)
    assert rej.code == R.TOO_MANY_PIXELS
    assert "200x100 = 20000" in rej.reason and "19999" in rej.reason


def test_in_memory_source_same_result(tmp_path: Path):
    data = jpeg_bytes(7)
    a, _ = probe_source(Source(name="a", size=len(data), data=data), max_pixels=10**8,
                        thumb_size=64)
    b = probe_path(write(tmp_path / "a.jpg", data), thumb_size=64)
    assert a.sha256 == b.sha256 and a.thumbnail == b.thumbnail
