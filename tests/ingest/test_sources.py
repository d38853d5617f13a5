"""Walking folders and archives; unsafe archive members are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqualens.ingest import report as R
from aqualens.ingest.sources import (Skipped, Source, count_paths, iter_paths, unsafe_reason)
from tests.ingest.helpers import image_folder, jpeg_bytes, make_tar, make_zip, write

LIMIT = 10_000_000


def _split(items):
    sources = [i for i in items if isinstance(i, Source)]
    rejected = {r.name: r for r in items if isinstance(r, R.Rejection)}
    skipped = [i.name for i in items if isinstance(i, Skipped)]
    return sources, rejected, skipped


def test_folder_recursive_sorted_with_companions(tmp_path: Path):
    image_folder(tmp_path / "in", 2, sub="b")
    image_folder(tmp_path / "in", 1, start=5, sub="a")
    write(tmp_path / "in" / "a" / "labels.txt", b"0 0.5 0.5 0.1 0.1")
    write(tmp_path / "in" / ".hidden" / "x.jpg", jpeg_bytes(9))
    write(tmp_path / "in" / ".DS_Store", b"junk")
    items = list(iter_paths([tmp_path / "in"], LIMIT))
    sources, rejected, skipped = _split(items)
    assert [s.name for s in sources] == ["a/img_0005.jpg", "b/img_0000.jpg", "b/img_0001.jpg"]
    assert all(s.path is not None and s.data is None for s in sources)
    assert skipped == [".DS_Store", "a/labels.txt"]
    assert not rejected
    assert count_paths([tmp_path / "in"]) == 5


def test_missing_path_is_reported(tmp_path: Path):
    _, rejected, _ = _split(list(iter_paths([tmp_path / "nope"], LIMIT)))
    assert rejected[str(tmp_path / "nope")].code == R.UNREADABLE


@pytest.mark.parametrize("name, fragment", [("../evil.jpg", "'..'"), ("/abs.jpg", "absolute"),
                                            ("a/../../evil.jpg", "'..'"),
                                            ("C:\\win.jpg", "absolute")])
def test_unsafe_reason(name: str, fragment: str):
    assert fragment in unsafe_reason(name)


def test_zip_members_and_unsafe_paths(tmp_path: Path):
    z = make_zip(tmp_path / "up.zip", {"ok/one.jpg": jpeg_bytes(1), "../evil.jpg": jpeg_bytes(2),
                                       "/abs.jpg": jpeg_bytes(3), "notes.txt": b"hi"},
                 symlinks={"link.jpg": "/etc/passwd"})
    sources, rejected, skipped = _split(list(iter_paths([z], LIMIT)))
    assert [s.name for s in sources] == ["ok/one.jpg"]
    assert sources[0].data == jpeg_bytes(1)  # small members are read into memory, not to disk
    assert rejected["up.zip:../evil.jpg"].code == R.UNSAFE_PATH
    assert "'..'" in rejected["up.zip:../evil.jpg"].reason
    assert rejected["up.zip:/abs.jpg"].code == R.UNSAFE_PATH
    assert "absolute" in rejected["up.zip:/abs.jpg"].reason
    assert rejected["up.zip:link.jpg"].code == R.LINK_OR_DEVICE
    assert skipped == ["notes.txt"]
    assert count_paths([z]) == 5


@pytest.mark.parametrize("mode, suffix", [("w", ".tar"), ("w:gz", ".tar.gz")])
def test_tar_members_links_devices_unsafe(tmp_path: Path, mode: str, suffix: str):
    t = make_tar(tmp_path / f"up{suffix}", {"ok.jpg": jpeg_bytes(1), "../evil.jpg": jpeg_bytes(2),
                                            "/abs.jpg": jpeg_bytes(3)},
                 symlinks={"sym.jpg": "/etc/passwd"}, hardlinks={"hard.jpg": "ok.jpg"},
                 devices=["dev.jpg"], mode=mode)
    sources, rejected, _ = _split(list(iter_paths([t], LIMIT)))
    label = t.name
    assert [s.name for s in sources] == ["ok.jpg"]
    assert rejected[f"{label}:../evil.jpg"].code == R.UNSAFE_PATH
    assert rejected[f"{label}:/abs.jpg"].code == R.UNSAFE_PATH
    assert "link" in rejected[f"{label}:sym.jpg"].reason
    assert rejected[f"{label}:hard.jpg"].code == R.LINK_OR_DEVICE
    assert "device" in rejected[f"{label}:dev.jpg"].reason


def test_over_size_limit_file_zip_and_tar(tmp_path: Path):
    big = jpeg_bytes(1, size=(300, 300), quality=100)
    limit = len(big) - 1
    f = write(tmp_path / "in" / "big.jpg", big)
    z = make_zip(tmp_path / "in" / "b.zip", {"big.jpg": big, "small.jpg": jpeg_bytes(2)})
    t = make_tar(tmp_path / "in" / "b.tar", {"big.jpg": big})
    sources, rejected, _ = _split(list(iter_paths([f, z, t], limit)))
    assert [s.name for s in sources] == ["small.jpg"]
    assert {r.code for r in rejected.values()} == {R.TOO_LARGE}
    assert set(rejected) == {"big.jpg", "b.zip:big.jpg", "b.tar:big.jpg"}
    assert f"limit of {limit} bytes" in rejected["big.jpg"].reason


def test_large_member_spooled_to_temp_and_removed(tmp_path: Path, monkeypatch):
    from aqualens.ingest import sources as S

    monkeypatch.setattr(S, "MEMORY_LIMIT", 100)
    z = make_zip(tmp_path / "b.zip", {"x.jpg": jpeg_bytes(1)})
    (tmp_path / "spool").mkdir()
    [src] = [i for i in iter_paths([z], LIMIT, tmp_dir=tmp_path / "spool")]
    assert src.temp and src.path.parent == tmp_path / "spool"
    assert src.path.read_bytes() == jpeg_bytes(1)
    src.cleanup()
    assert not any((tmp_path / "spool").iterdir())


def test_damaged_archives(tmp_path: Path):
    bad_zip = write(tmp_path / "bad.zip", b"PK\x03\x04 not really a zip")
    good = make_tar(tmp_path / "t.tar.gz", {"a.jpg": jpeg_bytes(1), "b.jpg": jpeg_bytes(2)},
                    mode="w:gz")
    cut = write(tmp_path / "cut.tar.gz", good.read_bytes()[: len(good.read_bytes()) // 2])
    _, rejected, _ = _split(list(iter_paths([bad_zip, cut], LIMIT)))
    assert rejected["bad.zip"].code == R.BAD_ARCHIVE
    assert any(r.code == R.BAD_ARCHIVE and r.name.startswith("cut.tar.gz")
               for r in rejected.values())
