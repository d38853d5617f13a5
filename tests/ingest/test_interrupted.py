"""An ingest killed halfway (SIGKILL) re-runs to the state of a clean run; fsck stays clean."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from aqualens.catalog.context import Context
from aqualens.catalog.db import dispose_engines
from aqualens.catalog.tables import Collection, CollectionImage, Image
from aqualens.storage import forget_stores
from tests.conftest import make_settings
from tests.ingest.helpers import image_folder, write

N = 400
CLI = "from aqualens.cli.main import main; main()"


def _cli(data: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQUALENS_")}
    env["AQUALENS_DATA_DIR"] = str(data)
    return subprocess.Popen([sys.executable, "-c", CLI, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _rows(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # file or schema not there yet
        return []


def _state(data: Path) -> tuple:
    """Everything an ingest decides, without ids and timestamps."""
    ctx = Context(make_settings(data))
    with ctx.session() as s:
        images = sorted((i.sha256, i.size, i.width, i.height, i.format, i.thumb_sha256,
                         i.original_name, i.station, i.depth, i.visibility, i.search_text)
                        for i in s.scalars(select(Image)))
        links = sorted((c.name, i.sha256, ci.original_name) for ci, c, i in s.execute(
            select(CollectionImage, Collection, Image)
            .join(Collection, Collection.id == CollectionImage.collection_id)
            .join(Image, Image.id == CollectionImage.image_id)))
    blobs = sorted(ctx.store.iter_blobs())
    return images, links, blobs


@pytest.mark.slow
def test_killed_ingest_reruns_to_clean_state(tmp_path: Path):
    image_folder(tmp_path / "in", N // 2, sub="a")
    image_folder(tmp_path / "in", N // 2, start=N // 2, sub="b")
    side = write(tmp_path / "m.csv", b"file,station,depth\na/img_0001.jpg,S1,5\n"
                                     b"b/img_0300.jpg,S2,7\n")
    args = ["ingest", str(tmp_path / "in"), "--collection", "cruise", "--metadata", str(side)]

    killed = tmp_path / "killed"
    proc = _cli(killed, *args)
    db = killed / "catalog.sqlite"
    deadline = time.monotonic() + 60
    n = 0
    while time.monotonic() < deadline and proc.poll() is None:
        # Kill once at least one batch of rows is committed and more are to come.
        n = (_rows(db, "select count(*) from collection_images") or [(0,)])[0][0]
        if n >= 200:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the ingest ended before it could be killed"
    assert 0 < n < N

    # The re-run and a clean run into another data dir, side by side.
    rerun, clean = _cli(killed, *args), _cli(tmp_path / "clean", *args)
    for proc in (rerun, clean):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode()

    try:
        assert _state(killed) == _state(tmp_path / "clean")
        images, links, blobs = _state(killed)
        assert len(images) == N and len(links) == N and len(blobs) == 2 * N

        from aqualens.catalog.fsck import fsck

        ctx = Context(make_settings(killed))
        assert fsck(ctx).ok  # default grace: what `aqualens fsck` reports
        strict = fsck(ctx, grace=0)
        # The only thing a SIGKILL may leave is the temp file of a blob being written at that
        # moment (never a blob under its key): `aqualens fsck --repair` removes it.
        assert {p.kind for p in strict.problems} <= {"temp"}, strict.to_dict()
        fsck(ctx, repair=True, grace=0)
        assert fsck(ctx, grace=0).ok
    finally:
        dispose_engines()
        forget_stores()
