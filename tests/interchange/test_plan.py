"""Step 2 of an import (``interchange.plan``): options and image checks, before any write."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from aqualens.core.errors import ValidationError
from aqualens.formats.base import ImageRecord
from aqualens.interchange.plan import ImportOptions, check_image


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), 128).save(buf, "PNG")
    return buf.getvalue()


def test_image_checks(tmp_path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(_png(30, 20))
    assert check_image(ImageRecord(ref="good.png", path=good), 10_000) == \
        (hashlib.sha256(good.read_bytes()).hexdigest(), 30, 20)
    assert check_image(ImageRecord(ref="good.png", path=good), 500) == \
        "image has 30x20 pixels, over the limit of 500"
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:40])
    assert check_image(ImageRecord(ref="cut.png", path=cut), 10_000).startswith(
        "not a readable image")
    assert check_image(ImageRecord(ref="gone.png", path=tmp_path / "gone.png"), 10_000) \
        .startswith("cannot read image file")


@pytest.mark.parametrize("kwargs,field", [({"on_outside": "wrap"}, "on_outside"),
                                          ({"unknown_labels": "guess"}, "unknown_labels"),
                                          ({"status": "maybe"}, "status")])
def test_bad_options_name_their_field(kwargs, field) -> None:
    with pytest.raises(ValidationError) as err:
        ImportOptions(**kwargs).check()
    assert err.value.field == field
    ImportOptions().check()  # the defaults are valid
