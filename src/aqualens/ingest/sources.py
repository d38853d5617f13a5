"""Walk what the user gave us: files, folders (recursive), zip and tar archives.

Archives are read member by member, never extracted as a whole: each member is read into memory
(small) or spooled into one temp file (large) just before it is probed, and the temp file is
removed right after. Unsafe members are rejected by name instead of being read: absolute paths,
``..`` components, symlinks, hard links, devices and FIFOs, members over the size limit,
encrypted members.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aqualens.ingest import report as R

# Members up to this size are held in memory; bigger ones are spooled to one temp file.
MEMORY_LIMIT = 32 * 1024 * 1024
CHUNK = 1024 * 1024
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
# Files that commonly sit beside images (annotations, sidecars, notes): skipped in folders and
# archives, and listed in the report, rather than rejected one by one as "not an image".
COMPANION_SUFFIXES = {".txt", ".csv", ".tsv", ".json", ".xml", ".yaml", ".yml", ".md", ".pdf",
                      ".html", ".htm", ".ini", ".log", ".py", ".ipynb", ".zip.md5", ".md5",
                      ".sha256", ".db"}
JUNK_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}


@dataclass
class Source:
    """One candidate image: a file on disk, or an archive member in memory or a temp file."""

    name: str
    size: int
    path: Path | None = None
    data: bytes | None = None
    temp: bool = False  # ``path`` is our temp file: remove it after probing
    url: str | None = None

    def cleanup(self) -> None:
        """Drop the member's bytes or temp file once it has been probed."""
        self.data = None
        if self.temp and self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass
class Skipped:
    """A companion file (labels, sidecar, notes) that is not an image and was left alone."""

    name: str


Item = Source | R.Rejection | Skipped


def is_companion(name: str) -> bool:
    """Hidden files, OS junk and known non-image companions (annotation files, sidecars)."""
    base = PurePosixPath(name).name
    if base.startswith(".") or base.lower() in JUNK_NAMES:
        return True
    return PurePosixPath(base.lower()).suffix in COMPANION_SUFFIXES


def archive_kind(path: Path) -> str | None:
    """``"zip"``, ``"tar"`` or None, from the name or, failing that, the magic bytes."""
    lower = path.name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    try:
        with open(path, "rb") as fh:
            head = fh.read(262)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def unsafe_reason(member: str) -> str | None:
    """Why an archive member path is unsafe to use as a name, or None."""
    name = member.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"unsafe archive member path {member!r}: absolute paths are refused"
    if ".." in PurePosixPath(name).parts:
        return f"unsafe archive member path {member!r}: '..' components are refused"
    if "\x00" in name:
        return f"unsafe archive member path {member!r}: NUL byte"
    return None


def too_large(name: str, size: int, limit: int) -> R.Rejection:
    return R.Rejection(name, f"{size} bytes is over the size limit of {limit} bytes "
                             "(setting AQUALENS_LIMITS__MAX_FILE_BYTES)", R.TOO_LARGE)


def _read_member(name: str, fh, size_hint: int, limit: int, tmp_dir: Path | None,
                 url: str | None, label: str) -> Source | R.Rejection:
    """Read one member stream, never more than ``limit`` + 1 bytes (sizes in headers can lie)."""
    if size_hint <= MEMORY_LIMIT:
        data = fh.read(min(limit, MEMORY_LIMIT) + 1)
        if len(data) > limit:
            return too_large(f"{label}:{name}", len(data), limit)
        if len(data) > MEMORY_LIMIT:  # the header understated the size: spool the rest
            return _spool(name, data, fh, limit, tmp_dir, url, label)
        return Source(name=name, size=len(data), data=data, url=url)
    return _spool(name, b"", fh, limit, tmp_dir, url, label)


def _spool(name: str, head: bytes, fh, limit: int, tmp_dir: Path | None,
           url: str | None, label: str) -> Source | R.Rejection:
    fd, tmp = tempfile.mkstemp(prefix="aqualens-member-", dir=tmp_dir)
    total = len(head)
    with os.fdopen(fd, "wb") as out:
        out.write(head)
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            total += len(chunk)
            if total > limit:
                break
            out.write(chunk)
    if total > limit:
        Path(tmp).unlink(missing_ok=True)
        return too_large(f"{label}:{name}", total, limit)
    return Source(name=name, size=total, path=Path(tmp), temp=True, url=url)


def iter_zip(path: Path, label: str, limit: int, tmp_dir: Path | None) -> Iterator[Item]:
    """Members of a zip file, in archive order."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        yield R.Rejection(label, f"cannot open zip archive: {exc}", R.BAD_ARCHIVE)
        return
    with zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir():
                continue
            why = unsafe_reason(name)
            if why:
                yield R.Rejection(f"{label}:{name}", why, R.UNSAFE_PATH)
                continue
            # Unix type bits (symlink, device, FIFO) sit in the high word; 0 means "not set".
            ftype = stat.S_IFMT(info.external_attr >> 16)
            if ftype and ftype != stat.S_IFREG:
                yield R.Rejection(f"{label}:{name}", "symlink or special file in archive refused",
                                  R.LINK_OR_DEVICE)
                continue
            if is_companion(name) or name.startswith("__MACOSX/"):
                yield Skipped(name)
                continue
            if info.file_size > limit:
                yield too_large(f"{label}:{name}", info.file_size, limit)
                continue
            if info.flag_bits & 0x1:
                yield R.Rejection(f"{label}:{name}", "encrypted archive member", R.UNREADABLE)
                continue
            try:
                with zf.open(info) as fh:
                    item = _read_member(name, fh, info.file_size, limit, tmp_dir,
                                        f"{path.resolve().as_uri()}#{name}", label)
            except Exception as exc:
                item = R.Rejection(f"{label}:{name}", f"corrupt archive member: {exc}",
                                   R.BAD_ARCHIVE)
            yield item


def iter_tar(path: Path, label: str, limit: int, tmp_dir: Path | None) -> Iterator[Item]:
    """Members of a tar file (any compression), in one sequential pass."""
    try:
        tf = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        yield R.Rejection(label, f"cannot open tar archive: {exc}", R.BAD_ARCHIVE)
        return
    with tf:
        try:
            for member in tf:
                name = member.name
                if member.isdir():
                    continue
                why = unsafe_reason(name)
                if why:
                    yield R.Rejection(f"{label}:{name}", why, R.UNSAFE_PATH)
                    continue
                if not member.isfile():
                    kind = "link" if (member.issym() or member.islnk()) else "device or FIFO"
                    yield R.Rejection(f"{label}:{name}", f"{kind} in archive refused",
                                      R.LINK_OR_DEVICE)
                    continue
                if is_companion(name):
                    yield Skipped(name)
                    continue
                if member.size > limit:
                    yield too_large(f"{label}:{name}", member.size, limit)
                    continue
                fh = tf.extractfile(member)
                if fh is None:  # pragma: no cover - isfile() members always have data
                    continue
                with fh:
                    item = _read_member(name, fh, member.size, limit, tmp_dir,
                                        f"{path.resolve().as_uri()}#{name}", label)
                yield item
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield R.Rejection(label, f"tar archive is damaged, stopped reading: {exc}",
                              R.BAD_ARCHIVE)


def _file_source(path: Path, name: str, limit: int) -> Source | R.Rejection:
    try:
        size = path.stat().st_size
    except OSError as exc:
        return R.Rejection(name, f"cannot read file: {exc.strerror}", R.UNREADABLE)
    if size > limit:
        return too_large(name, size, limit)
    return Source(name=name, size=size, path=path, url=path.resolve().as_uri())


def iter_file(path: Path, name: str, limit: int, tmp_dir: Path | None = None,
              expand_archives: bool = True) -> Iterator[Item]:
    """One file given by the user: an image candidate, or an archive to walk."""
    kind = archive_kind(path) if expand_archives else None
    if kind == "zip":
        yield from iter_zip(path, name, limit, tmp_dir)
    elif kind == "tar":
        yield from iter_tar(path, name, limit, tmp_dir)
    else:
        yield _file_source(path, name, limit)


def walk_folder(root: Path) -> Iterator[tuple[str, Path]]:
    """``(relative name, path)`` of every file below ``root``, sorted, hidden folders skipped.

    Symlinked files are followed (the user's own disk), symlinked folders are not (loops).
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            full = Path(dirpath) / fname
            yield full.relative_to(root).as_posix(), full


def iter_paths(paths: list[Path], limit: int, *, tmp_dir: Path | None = None,
               exclude: set[Path] | None = None) -> Iterator[Item]:
    """Everything below ``paths`` in a stable order: folders recursively, archives expanded.

    Names are relative to a folder argument (``Copepoda/123.png``), the bare file name for a
    file argument, and the member path for archive members.
    """
    exclude = exclude or set()
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for rel, full in walk_folder(path):
                if full.resolve() in exclude:
                    continue
                if is_companion(rel):
                    yield Skipped(rel)
                    continue
                yield from iter_file(full, rel, limit, tmp_dir)
        elif path.exists():
            yield from iter_file(path, path.name, limit, tmp_dir)
        else:
            yield R.Rejection(str(path), "no such file or folder", R.UNREADABLE)


def count_paths(paths: list[Path]) -> int:
    """How many items :func:`iter_paths` will yield, roughly (archive members counted)."""
    total = 0
    for path in paths:
        path = Path(path)
        files = [full for _, full in walk_folder(path)] if path.is_dir() else [path]
        for full in files:
            kind = archive_kind(full) if full.is_file() else None
            try:
                if kind == "zip":
                    with zipfile.ZipFile(full) as zf:
                        total += sum(1 for i in zf.infolist() if not i.is_dir())
                    continue
                if kind == "tar" and full.stat().st_size < 64 * 1024 * 1024:
                    # Big compressed tars would be decompressed twice; they count as one.
                    with tarfile.open(full, mode="r:*") as tf:
                        total += sum(1 for m in tf.getmembers() if not m.isdir())
                    continue
            except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError):
                pass
            total += 1
    return total
