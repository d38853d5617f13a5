"""The ``service`` job kind's own pieces: an event's inputs and the file outputs."""

from __future__ import annotations

import pytest

from aqualens.catalog.tables import Event
from aqualens.core.errors import ValidationError
from aqualens.processing.service_kind import event_image_ids, put_output, suppressed_services


def test_put_output_is_atomic_and_relative_to_the_data_folder(ctx, tmp_path) -> None:
    path = put_output(ctx, "daily", "counts.csv", b"date,label,count\n")
    assert path == str(ctx.settings.data_dir / "outputs" / "daily" / "counts.csv")
    assert put_output(ctx, str(tmp_path / "abs"), "x.csv", b"1") == str(tmp_path / "abs" / "x.csv")
    put_output(ctx, "daily", "counts.csv", b"new")  # replaced whole, no temp file left
    folder = ctx.settings.data_dir / "outputs" / "daily"
    assert [p.name for p in folder.iterdir()] == ["counts.csv"]
    assert (folder / "counts.csv").read_bytes() == b"new"


def test_event_inputs_known_and_bad(ctx, tmp_path) -> None:
    params = {"service_id": 1, "triggers": [{"type": "folder", "collection": "inbox"}]}
    known = Event(id=1, service_id=1, key="image:7", payload={"image_ids": [7, 8]})
    assert event_image_ids(ctx, known, params, owner_id=1) == [7, 8]
    gone = Event(id=2, service_id=1, key="file:x",
                 payload={"type": "file", "trigger": 0, "path": str(tmp_path / "x.png")})
    with pytest.raises(ValidationError, match="x.png has gone") as err:
        event_image_ids(ctx, gone, params, owner_id=1)
    assert err.value.field == "path"
    odd = Event(id=3, service_id=1, key="odd", payload={"type": "carrier-pigeon"})
    with pytest.raises(ValidationError, match="event odd has an unknown payload"):
        event_image_ids(ctx, odd, params, owner_id=1)
    empty = Event(id=4, service_id=1, key="schedule:0:1",
                  payload={"type": "schedule", "trigger": 0})
    assert event_image_ids(ctx, empty, params, owner_id=1) == []  # a schedule selecting nothing
    assert suppressed_services() == set()  # no service is ingesting in this thread
