"""Look at one image without decoding it at full size.

Reads the bytes once (hashing them on the way), takes format and size from the header, checks the
pixel count against the decompression-bomb limit BEFORE any decoding, reads EXIF date/time and GPS,
then decodes only a reduced image (JPEG ``draft``: libjpeg's DCT scaling to 1/2, 1/4 or 1/8) to
make the thumbnail. That reduced decode still walks the whole entropy-coded stream, so a truncated
file fails there: the thumbnail doubles as the truncation check.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, UTC
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from aqualens.ingest import report as R
from aqualens.ingest.sources import CHUNK, Source

# Formats we catalogue. Pillow knows more (EPS, ICNS, ...) but those are not analysis images.
# (Multi-picture JPEGs from phones open through the JPEG plugin and report format "MPO".)
FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "GIF", "WEBP", "JPEG2000", "PPM")
THUMB_QUALITY = 85

# EXIF tags (numbers from the EXIF 2.32 specification).
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
DATETIME, DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x0132, 0x9003, 0x9011
MAKE, MODEL = 0x010F, 0x0110
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON, GPS_ALT_REF, GPS_ALT = 1, 2, 3, 4, 5, 6


class Rejected(Exception):
    """Raised inside probing; becomes a :class:`~aqualens.ingest.report.Rejection`."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass
class Probe:
    """What we learnt about one image."""

    sha256: str
    size: int
    format: str
    width: int
    height: int
    thumbnail: bytes
    captured_at: datetime | None = None
    lat: float | None = None
    lon: float | None = None
    depth: float | None = None
    instrument: str | None = None
    exif: dict[str, Any] = field(default_factory=dict)


def read_and_hash(source: Source) -> tuple[str, bytes | None]:
    """sha256 of the source; returns its bytes too when they fit in memory (read once)."""
    h = hashlib.sha256()
    if source.data is not None:
        h.update(source.data)
        return h.hexdigest(), source.data
    assert source.path is not None
    from aqualens.ingest.sources import MEMORY_LIMIT

    with open(source.path, "rb") as fh:
        if source.size <= MEMORY_LIMIT:
            data = fh.read()
            h.update(data)
            return h.hexdigest(), data
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest(), None


def _ratio(value: Any) -> float:
    """An EXIF rational (IFDRational, or a (num, den) pair) as float."""
    if isinstance(value, tuple) and len(value) == 2:
        return float(value[0]) / float(value[1]) if value[1] else 0.0
    return float(value)


def _dms(values: Any, ref: Any, negative: str) -> float | None:
    try:
        d, m, s = (_ratio(v) for v in values)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    deg = d + m / 60.0 + s / 3600.0
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    if str(ref).strip().upper().startswith(negative):
        deg = -deg
    return deg


def parse_exif_datetime(text: Any, offset: Any = None) -> datetime | None:
    """``YYYY:MM:DD HH:MM:SS`` (+ optional ``+HH:MM`` offset) as an aware datetime (UTC if none)."""
    if not isinstance(text, str):
        return None
    try:
        dt = datetime.strptime(text.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    tz = UTC
    if isinstance(offset, str) and len(offset.strip()) >= 6:
        try:
            sign = -1 if offset.strip()[0] == "-" else 1
            hh, mm = offset.strip()[1:6].split(":")
            tz = timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))
        except ValueError:
            pass
    return dt.replace(tzinfo=tz)


def read_exif(img: Image.Image, probe: Probe) -> None:
    """Fill capture time, GPS position, GPS depth and camera from EXIF, when present."""
    try:
        exif = img.getexif()
    except Exception:
        return
    if not exif:
        return
    sub = exif.get_ifd(EXIF_IFD) or {}
    taken = sub.get(DATETIME_ORIGINAL) or exif.get(DATETIME)
    probe.captured_at = parse_exif_datetime(taken, sub.get(OFFSET_TIME_ORIGINAL))
    if taken:
        probe.exif["DateTimeOriginal"] = str(taken).strip("\x00")
    make, model = exif.get(MAKE), exif.get(MODEL)
    camera = " ".join(str(v).strip("\x00 ") for v in (make, model) if v)
    if camera:
        probe.instrument = camera[:200]
        probe.exif["camera"] = camera
    gps = exif.get_ifd(GPS_IFD) or {}
    if GPS_LAT in gps and GPS_LON in gps:
        lat = _dms(gps[GPS_LAT], gps.get(GPS_LAT_REF, "N"), "S")
        lon = _dms(gps[GPS_LON], gps.get(GPS_LON_REF, "E"), "W")
        if lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180:
            probe.lat, probe.lon = round(lat, 7), round(lon, 7)
    if GPS_ALT in gps and gps.get(GPS_ALT_REF) in (1, b"\x01"):
        # Altitude reference 1 = below sea level: underwater cameras write their depth here.
        try:
            probe.depth = _ratio(gps[GPS_ALT])
        except (TypeError, ValueError, ZeroDivisionError):
            pass


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB for the JPEG thumbnail; 16-bit and float greyscale are stretched to 8 bits."""
    if img.mode in ("RGB", "L"):
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        import numpy as np

        a = np.asarray(img, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else a * 0
        return Image.fromarray(a.astype("uint8"), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB")


def make_thumbnail(img: Image.Image, size: int) -> bytes:
    """A JPEG of at most ``size`` px on its longest side, from a reduced decode where possible."""
    if img.format in ("JPEG", "MPO"):
        # draft() picks the largest DCT scale that still leaves >= size px: decoding 1/8 of a
        # 1920x1080 image is ~40x less work than the full decode.
        # Ask for the thumbnail's own box (aspect kept), not size x size, or a wide image would
        # be decoded one scale step larger than needed.
        w, h = img.size
        scale = size / max(w, h)
        img.draft("RGB" if img.mode != "L" else "L",
                  (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
    img.load()  # raises OSError on truncated data
    thumb = ImageOps.exif_transpose(img) if img.format in ("JPEG", "MPO", "TIFF", "WEBP") else img
    thumb = _to_rgb(thumb)
    thumb.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=THUMB_QUALITY, optimize=False)
    return out.getvalue()


def probe_source(source: Source, *, max_pixels: int, thumb_size: int) -> tuple[Probe, bytes | None]:
    """Probe one source; returns the probe and the bytes when they were read into memory.

    Raises :class:`Rejected` for files that are not images, too big in pixels, or truncated.
    """
    try:
        sha, data = read_and_hash(source)
    except OSError as exc:
        raise Rejected(f"cannot read file: {exc}", R.UNREADABLE) from exc
    fp: Any = io.BytesIO(data) if data is not None else source.path
    Image.init()  # registers every plugin once (``formats=`` only looks at registered ones)
    try:
        with warnings.catch_warnings():
            # Our own pixel limit applies below; Pillow's global one must not fire first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=FORMATS)
    except UnidentifiedImageError:
        raise Rejected("not an image (no known image format: "
                       f"{', '.join(FORMATS)})", R.NOT_AN_IMAGE) from None
    except Image.DecompressionBombError as exc:
        raise Rejected(f"too many pixels: {exc}", R.TOO_MANY_PIXELS) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise Rejected(f"truncated or damaged image header: {exc}", R.TRUNCATED) from None
    with img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise Rejected(f"image header gives an empty size {width}x{height}", R.TRUNCATED)
        if width * height > max_pixels:
            raise Rejected(f"too many pixels: {width}x{height} = {width * height} is over the "
                           f"limit of {max_pixels} (decompression bomb protection, setting "
                           "AQUALENS_LIMITS__MAX_IMAGE_PIXELS)", R.TOO_MANY_PIXELS)
        fmt = "JPEG" if img.format == "MPO" else str(img.format)
        probe = Probe(sha256=sha, size=source.size, format=fmt, width=width, height=height,
                      thumbnail=b"")
        read_exif(img, probe)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                probe.thumbnail = make_thumbnail(img, thumb_size)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise Rejected(f"truncated or damaged image data: {exc}", R.TRUNCATED) from None
        except Image.DecompressionBombError as exc:  # pragma: no cover - checked above
            raise Rejected(f"too many pixels: {exc}", R.TOO_MANY_PIXELS) from None
    return probe, data


def probe_path(path: Path, *, max_pixels: int = 200_000_000, thumb_size: int = 256) -> Probe:
    """Probe a file on disk (convenience for tools and tests)."""
    size = Path(path).stat().st_size
    return probe_source(Source(name=Path(path).name, size=size, path=Path(path)),
                        max_pixels=max_pixels, thumb_size=thumb_size)[0]
