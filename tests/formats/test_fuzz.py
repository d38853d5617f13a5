"""Property-based: random and broken input to every reader raises only FormatError."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aqualens.core.errors import FormatError
from aqualens.formats import format_names, get_format
from tests.interchange.helpers import make_image, sample_dataset

FILES = {"coco": "annotations.json", "voc": "a.xml", "yolo": "labels/img0.txt",
         "masks": "labels.csv", "folders": "meta.tsv", "ecotaxa": "ecotaxa_x.tsv",
         "dwca": "occurrence.txt", "csv": "annotations.csv"}
SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                           max_leaves=20)


def _read(fmt: str, root: Path) -> None:
    try:
        get_format(fmt).read(root)
    except FormatError:
        pass


@pytest.fixture(scope="module")
def valid_dirs(tmp_path_factory):  # noqa: ANN201
    """A valid export of the sample dataset in every format, to mutate."""
    base = tmp_path_factory.mktemp("fuzz")
    ds = sample_dataset(base / "imgs")
    out = {}
    for fmt in format_names():
        get_format(fmt).write(ds, base / fmt, {})
        out[fmt] = base / fmt
    return out


@pytest.mark.parametrize("fmt", sorted(FILES))
@SETTINGS
@given(data=st.binary(max_size=400))
def test_random_bytes(valid_dirs, fmt, data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "x"
        shutil.copytree(valid_dirs[fmt], root)
        target = root / FILES[fmt]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        _read(fmt, root)


@pytest.mark.parametrize("fmt", sorted(FILES))
@SETTINGS
@given(cut=st.integers(min_value=0, max_value=4000), junk=st.text(max_size=30))
def test_truncated_and_spliced_text(valid_dirs, fmt, cut, junk):
    """Valid files cut short and spliced with junk (broken rows, bad types, bad JSON)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "x"
        shutil.copytree(valid_dirs[fmt], root)
        main = {"coco": "annotations.json", "voc": "Annotations/img0.xml", "yolo": "data.yaml",
                "masks": "labels.csv", "folders": None, "ecotaxa": None, "dwca": "occurrence.txt",
                "csv": "annotations.csv"}[fmt]
        target = root / main if main else next(root.glob("ecotaxa_*.tsv"), None)
        if target is None or not target.exists():
            target = root / "meta.tsv"
            target.write_text("id\tx\n")
        text = target.read_text(encoding="utf-8", errors="replace")
        pos = cut % (len(text) + 1)
        target.write_text(text[:pos] + junk + text[pos:][: cut // 3], encoding="utf-8")
        _read(fmt, root)


@SETTINGS
@given(doc=json_values)
def test_coco_random_json_structures(tmp_path, doc):
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    _read("coco", tmp_path)


@SETTINGS
@given(images=st.lists(json_values, max_size=3), anns=st.lists(json_values, max_size=3),
       cats=st.lists(json_values, max_size=3))
def test_coco_random_records(tmp_path, images, anns, cats):
    make_image(tmp_path / "a.png", 8, 8)
    doc = {"images": images + [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
           "annotations": anns + [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": a}
                                  for a in anns],
           "categories": cats + [{"id": 1, "name": "x"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    _read("coco", tmp_path)
