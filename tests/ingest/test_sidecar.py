"""Sidecar metadata: column aliases, --map, EcoTaxa TSVs, JSON, bad values with row and column."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone, UTC
from pathlib import Path

import pytest

from aqualens.core.errors import FormatError, ValidationError
from aqualens.ingest.sidecar import (lookup, normalise_record, parse_datetime, parse_mapping,
                                     read_sidecar)


def _csv(tmp_path: Path, text: str, name: str = "meta.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_aliases_and_free_columns(tmp_path: Path):
    p = _csv(tmp_path, "filename,Date,Latitude,Longitude,depth_m,camera,instrument,notes\n"
                       "a.jpg,2021-06-01T10:00:00Z,43.5,7.25,12.5,CAM-1,GoPro,cloudy\n"
                       "b.jpg,2021-06-02,-10,-170,,,,\n")
    meta = read_sidecar(p)
    a = meta["a.jpg"]
    assert a["captured_at"] == datetime(2021, 6, 1, 10, tzinfo=UTC)
    assert (a["lat"], a["lon"], a["depth"]) == (43.5, 7.25, 12.5)
    assert (a["station"], a["instrument"]) == ("CAM-1", "GoPro")
    assert a["meta"] == {"notes": "cloudy"}
    b = meta["b.jpg"]
    assert b["captured_at"] == datetime(2021, 6, 2, tzinfo=UTC)
    assert "depth" not in b and b["meta"] == {}


def test_separate_date_and_time_columns_tsv(tmp_path: Path):
    p = _csv(tmp_path, "file\tdate\ttime\tlat\tlon\n"
                       "a.png\t20140420\t420\t18.0\t-24.4\n", "m.tsv")
    assert read_sidecar(p)["a.png"]["captured_at"] == datetime(2014, 4, 20, 0, 4, 20,
                                                               tzinfo=UTC)


def test_semicolon_csv_and_bom(tmp_path: Path):
    p = tmp_path / "m.csv"
    p.write_bytes("\ufefffile;lat;lon\na.jpg;1.5;2.5\n".encode("utf-8"))
    assert read_sidecar(p)["a.jpg"]["lat"] == 1.5


def test_map_overrides(tmp_path: Path):
    p = _csv(tmp_path, "pic,when,Y,X,Z,site\nq.jpg,2020-01-01 08:00+02:00,1,2,3,S1\n")
    mapping = parse_mapping(["file=pic", "captured_at=when", "lat=Y", "lon=X", "depth=Z",
                             "station=site"])
    rec = read_sidecar(p, mapping)["q.jpg"]
    assert rec["captured_at"] == datetime(2020, 1, 1, 8, tzinfo=timezone(timedelta(hours=2)))
    assert (rec["lat"], rec["lon"], rec["depth"], rec["station"]) == (1, 2, 3, "S1")
    assert rec["meta"] == {}


def test_map_errors(tmp_path: Path):
    with pytest.raises(ValidationError) as e:
        parse_mapping(["colour=c"])
    assert e.value.field == "--map" and "captured_at" in e.value.valid
    with pytest.raises(ValidationError):
        parse_mapping(["lat"])
    p = _csv(tmp_path, "file,lat\na.jpg,1\n")
    with pytest.raises(FormatError) as e:
        read_sidecar(p, {"lat": "Latitude"})
    assert "Latitude" in str(e.value) and "file, lat" in e.value.valid


def test_no_file_column(tmp_path: Path):
    with pytest.raises(FormatError) as e:
        read_sidecar(_csv(tmp_path, "x,lat\na,1\n"))
    assert "no file-name column" in str(e.value) and "img_file_name" in e.value.valid


def test_bad_values_named_by_file_row_column(tmp_path: Path):
    p = _csv(tmp_path, "file,date,lat,lon,depth\n"
                       "a.jpg,2021-06-01,45,7,10\n"
                       "b.jpg,yesterday,45,7,10\n"
                       "c.jpg,2021-06-01,95,7,10\n"
                       "d.jpg,2021-06-01,45,7,deep\n", "stations.csv")
    with pytest.raises(FormatError) as e:
        read_sidecar(p)
    err = e.value
    assert err.field == "stations.csv row 3 column 'date'"
    assert "yesterday" in str(err) and "and 2 more" in str(err)
    problems = [(d["row"], d["column"]) for d in err.details]
    assert problems == [(3, "date"), (4, "lat"), (5, "depth")]
    assert "out of range [-90.0, 90.0]" in err.details[1]["message"]


def test_repeated_rows_must_agree(tmp_path: Path):
    ok = _csv(tmp_path, "file,lat,obj\na.jpg,1,first\na.jpg,1,second\n")
    assert read_sidecar(ok)["a.jpg"]["meta"] == {"obj": "first"}
    bad = _csv(tmp_path, "file,lat\na.jpg,1\na.jpg,2\n", "bad.csv")
    with pytest.raises(FormatError) as e:
        read_sidecar(bad)
    assert "bad.csv row 3" in e.value.field and "first on row 2" in str(e.value)


def test_ecotaxa_tsv_as_sidecar(tmp_path: Path):
    p = _csv(tmp_path, "img_file_name\tobject_lat\tobject_lon\tobject_date\tobject_time\t"
                       "object_depth_min\tacq_instrument\tobject_annotation_category\n"
                       "[t]\t[f]\t[f]\t[t]\t[t]\t[f]\t[t]\t[t]\n"
                       "v1.jpg\t-44.7\t145.5\t20140420\t123456\t600.0\tZooScan\tCopepoda\n",
             "ecotaxa_x.tsv")
    rec = read_sidecar(p)["v1.jpg"]
    assert rec["captured_at"] == datetime(2014, 4, 20, 12, 34, 56, tzinfo=UTC)
    assert (rec["lat"], rec["lon"], rec["depth"], rec["instrument"]) == (-44.7, 145.5, 600.0,
                                                                        "ZooScan")
    assert rec["meta"] == {"object_annotation_category": "Copepoda"}


def test_json_list_and_mapping_forms(tmp_path: Path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"file": "x.jpg", "latitude": 3, "depth": 4.5, "extra": [1, 2]}]))
    assert read_sidecar(a)["x.jpg"]["meta"] == {"extra": [1, 2]}
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"y.jpg": {"lat": 1, "lon": 2, "datetime": "2020-02-02T02:02:02"}}))
    assert read_sidecar(b)["y.jpg"]["lon"] == 2
    c = tmp_path / "c.json"
    c.write_text("{not json")
    with pytest.raises(FormatError) as e:
        read_sidecar(c)
    assert "invalid JSON at line 1" in str(e.value)
    d = tmp_path / "d.json"
    d.write_text(json.dumps([{"file": "z.jpg", "lon": 500}]))
    with pytest.raises(FormatError) as e:
        read_sidecar(d)
    assert e.value.field == "d.json row record 1 column 'lon'"


def test_parse_datetime_forms():
    utc = UTC
    assert parse_datetime("2021:06:01 12:30:45") == datetime(2021, 6, 1, 12, 30, 45, tzinfo=utc)
    assert parse_datetime("2021-06-01T12:30:45Z") == datetime(2021, 6, 1, 12, 30, 45, tzinfo=utc)
    assert parse_datetime("20210601", "12:30") == datetime(2021, 6, 1, 12, 30, tzinfo=utc)
    assert parse_datetime("") is None
    with pytest.raises(ValueError):
        parse_datetime("01/06/2021")


def test_normalise_record_and_lookup():
    rec = normalise_record({"lat": "1.5", "station": " S ", "colour": "red"}, "upload")
    assert rec == {"lat": 1.5, "station": "S", "meta": {"colour": "red"}}
    with pytest.raises(FormatError) as e:
        normalise_record({"lat": "north"}, "metadata for a.jpg")
    assert "metadata for a.jpg" in str(e.value) and "'lat'" in str(e.value)
    meta = {"a.jpg": {"x": 1}, "sub/b.jpg": {"x": 2}}
    assert lookup(meta, "folder/a.jpg") == {"x": 1}
    assert lookup(meta, "sub/b.jpg") == {"x": 2}
    assert lookup(meta, "b.jpg") is None
