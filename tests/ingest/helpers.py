"""Tiny images, archives and sidecars made inside the tests."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

from PIL import Image


def jpeg_bytes(seed: int, size: tuple[int, int] = (64, 48), exif: Image.Exif | None = None,
               quality: int = 90) -> bytes:
    """A distinct JPEG (a gradient keyed by ``seed``), optionally with EXIF."""
    img = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    # The seed's bits as black/white 4x4 blocks along the top: distinct even after JPEG.
    for bit in range(min(16, size[0] // 4)):
        value = 255 if (seed >> bit) & 1 else 0
        for x in range(bit * 4, bit * 4 + 4):
            for y in range(min(4, size[1])):
                img.putpixel((x, y), (value, value, value))
    buf = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    img.save(buf, "JPEG", quality=quality, **kwargs)
    return buf.getvalue()


def noise_jpeg(size: tuple[int, int] = (200, 200)) -> bytes:
    """A JPEG of noise: big for its pixel count (size-limit tests)."""
    buf = io.BytesIO()
    Image.effect_noise(size, 80).convert("RGB").save(buf, "JPEG", quality=100)
    return buf.getvalue()


def png_bytes(seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    img = Image.new(mode, size, (seed % 256) if mode in ("L", "I;16") else
                    ((seed * 7) % 256, (seed * 3) % 256, 200) + ((128,) if mode == "RGBA" else ()))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image_folder(root: Path, n: int, start: int = 0, sub: str | None = None) -> list[Path]:
    """``n`` JPEGs named img_XXXX.jpg under ``root`` (or ``root/sub``)."""
    folder = root / sub if sub else root
    return [write(folder / f"img_{i:04d}.jpg", jpeg_bytes(i)) for i in range(start, start + n)]


def exif_with(dt: str = "2021:06:01 12:30:45", lat: tuple = (43, 25, 30.0), lat_ref: str = "N",
              lon: tuple = (7, 52, 12.0), lon_ref: str = "W", make: str = "SubSea",
              model: str = "Cam 3", depth: float | None = None) -> Image.Exif:
    """An EXIF block with DateTimeOriginal, GPS and camera."""
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0110] = model
    exif.get_ifd(0x8769)[0x9003] = dt
    gps = exif.get_ifd(0x8825)
    gps[1] = lat_ref
    gps[2] = lat
    gps[3] = lon_ref
    gps[4] = lon
    if depth is not None:
        gps[5] = b"\x01"
        gps[6] = depth
    return exif


def make_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    """A zip with ``members``; ``symlinks`` adds Unix symlink entries (name → target)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: dict[str, bytes], *, symlinks: dict[str, str] | None = None,
             devices: list[str] | None = None, hardlinks: dict[str, str] | None = None,
             mode: str = "w") -> Path:
    """A tar with regular ``members`` plus symlinks, hard links and character devices."""
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
        for name, target in (hardlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.LNKTYPE
            info.linkname = target
            tf.addfile(info)
        for name in devices or []:
            info = tarfile.TarInfo(name)
            info.type = tarfile.CHRTYPE
            info.devmajor, info.devminor = 1, 3
            tf.addfile(info)
    return path
