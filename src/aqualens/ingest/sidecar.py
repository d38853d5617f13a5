"""Sidecar metadata: a CSV, TSV or JSON file that describes images by file name.

Known columns (and their usual aliases, case-insensitive) fill the catalogue fields captured_at,
lat, lon, depth, instrument and station; every other non-empty column is kept as free metadata
(``Image.meta``). ``--map field=column`` overrides the guess. EcoTaxa import TSVs work as they are
(their ``[t]``/``[f]`` type row is skipped; ``img_file_name``, ``object_lat``, ``object_date`` +
``object_time`` ... are known aliases).

Every bad value is reported with the file, the row (the line number as a spreadsheet shows it,
header = 1) and the column, all at once, before anything is ingested.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import date, datetime, time, UTC
from pathlib import Path, PurePosixPath
from typing import Any

from aqualens.core.errors import FormatError, ValidationError

FIELDS = ("captured_at", "lat", "lon", "depth", "instrument", "station")
# Pseudo-fields: the file-name key, and a separate time-of-day column joined to a date column.
MAPPABLE = ("file", "time", *FIELDS)

ALIASES: dict[str, tuple[str, ...]] = {
    "file": ("file", "filename", "file_name", "name", "image", "image_name", "img_file_name",
             "path", "original_name"),
    "captured_at": ("captured_at", "datetime", "date_time", "timestamp", "capture_time",
                    "datetimeoriginal", "eventdate", "date", "object_date", "sampling_date"),
    "time": ("time", "object_time", "time_utc", "utc_time"),
    "lat": ("lat", "latitude", "object_lat", "decimallatitude", "lat_deg"),
    "lon": ("lon", "lng", "long", "longitude", "object_lon", "decimallongitude", "lon_deg"),
    "depth": ("depth", "depth_m", "object_depth_min", "depth_min", "sample_depth", "z"),
    "instrument": ("instrument", "acq_instrument", "sensor", "device", "camera_model"),
    "station": ("station", "camera", "station_id", "site", "sample_station", "stationid",
                "deployment"),
}
DATE_ONLY = ("date", "object_date", "sampling_date")
MAX_PROBLEMS = 100
DATE_FORMATS = "ISO 8601 (2021-06-01, 2021-06-01T12:30:00Z, 2021-06-01 12:30+02:00), " \
               "EXIF (2021:06:01 12:30:00) or YYYYMMDD with a time column HHMMSS"


class Problems:
    """Collects bad values with file, row and column."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[dict[str, Any]] = []

    def add(self, row: int | str, column: str | None, value: Any, message: str) -> None:
        self.items.append({"file": self.file, "row": row, "column": column,
                           "value": None if value is None else str(value)[:200],
                           "message": message})

    def raise_if_any(self) -> None:
        if not self.items:
            return
        first = self.items[0]
        where = f"{self.file} row {first['row']}" + (
            f" column {first['column']!r}" if first["column"] else "")
        more = f" (and {len(self.items) - 1} more)" if len(self.items) > 1 else ""
        raise FormatError(f"{where}: {first['message']}{more}", field=where,
                          details=self.items[:MAX_PROBLEMS])


def parse_mapping(items: list[str] | None) -> dict[str, str]:
    """``["lat=Latitude (deg)", "station=cam"]`` → ``{"lat": "Latitude (deg)", ...}``."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, column = item.partition("=")
        name = name.strip().lower()
        if not sep or not column.strip():
            raise ValidationError(f"--map {item!r} is not field=column", field="--map",
                                  valid="field=column, e.g. lat=Latitude")
        if name not in MAPPABLE:
            raise ValidationError(f"--map: unknown field {name!r}", field="--map",
                                  valid=", ".join(MAPPABLE))
        out[name] = column.strip()
    return out


def parse_datetime(value: Any, time_value: Any = None) -> datetime | None:
    """A capture time from common spellings; naive values are taken as UTC. ValueError if bad."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime.combine(value, time())
    else:
        text = str(value).strip()
        if len(text) == 8 and text.isdigit():  # EcoTaxa YYYYMMDD
            dt = datetime.strptime(text, "%Y%m%d")
        elif len(text) >= 19 and text[4] == ":" and text[7] == ":":  # EXIF
            dt = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
        else:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if time_value is not None and str(time_value).strip() and dt.time() == time():
        dt = datetime.combine(dt.date(), _parse_time(str(time_value).strip()), dt.tzinfo)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def _parse_time(text: str) -> time:
    if ":" in text:
        return time.fromisoformat(text)
    if not text.isdigit() or len(text) > 6:
        raise ValueError(f"time {text!r} is not HHMMSS or HH:MM:SS")
    text = text.zfill(6)  # EcoTaxa writes 00:04:20 as "420"
    return time(int(text[:2]), int(text[2:4]), int(text[4:6]))


def _number(value: Any, lo: float | None = None, hi: float | None = None) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ValueError(f"{number} is out of range [{lo}, {hi}]")
    return number


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text[:200] or None


def convert(field: str, value: Any, time_value: Any = None) -> Any:
    """One value of a known field, converted; raises ValueError with a message saying why."""
    if field == "captured_at":
        try:
            return parse_datetime(value, time_value)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"cannot read date/time {value!r}{' ' + str(time_value) if time_value else ''}"
                             f" ({exc}); valid: {DATE_FORMATS}") from None
    if field == "lat":
        return _number(value, -90.0, 90.0)
    if field == "lon":
        return _number(value, -180.0, 180.0)
    if field == "depth":
        return _number(value)
    return _text(value)


def normalise_record(record: dict[str, Any], where: str) -> dict[str, Any]:
    """Check and convert one metadata record given as a dict (API / Python callers).

    Known keys become typed values; ``meta`` (a dict) and every other key become free metadata.
    Raises :class:`FormatError` naming ``where`` and the key.
    """
    problems = Problems(where)
    out: dict[str, Any] = {"meta": {}}
    for key, value in record.items():
        if key == "meta" and isinstance(value, dict):
            out["meta"].update(value)
        elif key in FIELDS:
            try:
                out[key] = convert(key, value, record.get("time") if key == "captured_at" else None)
            except (ValueError, TypeError) as exc:
                problems.add("-", key, value, str(exc))
        elif key != "time" and value not in (None, ""):
            out["meta"][key] = value
    problems.raise_if_any()
    return out


def _pick(header: list[str], field: str, mapping: dict[str, str], file: str) -> str | None:
    """The column used for ``field``: the explicit mapping, else the first alias present."""
    if field in mapping:
        if mapping[field] not in header:
            raise FormatError(f"{file}: --map {field}={mapping[field]} names no column",
                              field=f"--map {field}", valid=", ".join(header))
        return mapping[field]
    lower = {h.strip().lower(): h for h in header}
    for alias in ALIASES[field]:
        if alias in lower:
            return lower[alias]
    return None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _rows(path: Path, text: str,
          name: str | None = None) -> tuple[list[str], list[tuple[int | str, dict[str, Any]]]]:
    """Header and ``(row number, record)`` pairs of a CSV/TSV or JSON sidecar; errors name
    ``name`` (the file as the user called it), else the path's own name."""
    name = name or path.name
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{name}: invalid JSON at line {exc.lineno}: {exc.msg}",
                              field=name) from None
        if isinstance(data, dict):  # {"name.jpg": {...}, ...}
            data = [{"file": k, **(v if isinstance(v, dict) else {"value": v})}
                    for k, v in data.items()]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise FormatError(f"{name}: JSON sidecar must be a list of objects or an "
                              "object keyed by file name", field=name)
        header: list[str] = []
        for r in data:
            header.extend(k for k in r if k not in header)
        return header, [(f"record {i + 1}", r) for i, r in enumerate(data)]
    if suffix in (".tsv", ".tab") or (suffix == ".txt" and "\t" in text.split("\n", 1)[0]):
        delimiter = "\t"
    else:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        return _csv_rows(name, reader)
    except csv.Error as exc:  # a stray carriage return or NUL: not a readable table
        raise FormatError(f"{name} line {reader.line_num}: not a readable CSV/TSV table "
                          f"({exc})", field=f"{name} line {reader.line_num}",
                          valid="a CSV, TSV or JSON sidecar (UTF-8 text)") from None


def _csv_rows(name: str, reader: Any) -> tuple[list[str], list[tuple[int | str, dict]]]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise FormatError(f"{name} is empty", field=name) from None
    rows: list[tuple[int | str, dict[str, Any]]] = []
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        if line == 2 and all(v.strip().lower() in ("[t]", "[f]") for v in values if v.strip()):
            continue  # EcoTaxa type row
        if len(values) > len(header):
            raise FormatError(f"{name} row {line}: {len(values)} values but the header has "
                              f"{len(header)} columns", field=f"{name} row {line}")
        rows.append((line, dict(zip(header, values))))
    return header, rows


def read_sidecar(path: Path, mapping: dict[str, str] | None = None,
                 display_name: str | None = None) -> dict[str, dict[str, Any]]:
    """Read a sidecar into ``{file name: record}``; records as from :func:`normalise_record`.

    Raises :class:`FormatError` listing every bad value (file, row, column) in ``details``.
    """
    mapping = mapping or {}
    file = display_name or Path(path).name
    try:
        text = _decode(Path(path).read_bytes())
    except OSError as exc:
        raise FormatError(f"cannot read metadata file {file}: {exc.strerror}",
                          field="metadata") from exc
    header, rows = _rows(Path(path), text, file)
    key_col = _pick(header, "file", mapping, file)
    if key_col is None:
        raise FormatError(f"{file}: no file-name column", field=f"{file} header",
                          valid="a column named " + ", ".join(ALIASES["file"]) +
                          " (or --map file=COLUMN)")
    cols = {f: _pick(header, f, mapping, file) for f in (*FIELDS, "time")}
    if cols["time"] and cols["captured_at"] and cols["captured_at"].lower() not in DATE_ONLY \
            and "captured_at" not in mapping:
        cols["time"] = None  # a full date-time column wins; "time" stays free metadata
    used = {c for c in cols.values() if c} | {key_col}
    problems = Problems(file)
    out: dict[str, dict[str, Any]] = {}
    first_row: dict[str, int | str] = {}
    for line, row in rows:
        name = str(row.get(key_col) or "").strip()
        if not name:
            problems.add(line, key_col, None, "empty file name")
            continue
        record: dict[str, Any] = {"meta": {}}
        for field in FIELDS:
            col = cols[field]
            if not col:
                continue
            extra = row.get(cols["time"]) if field == "captured_at" and cols["time"] else None
            try:
                value = convert(field, row.get(col), extra)
            except (ValueError, TypeError) as exc:
                problems.add(line, col, row.get(col), str(exc))
                continue
            if value is not None:
                record[field] = value
        for col, value in row.items():
            if col not in used and value not in (None, "") and str(value).strip() != "":
                record["meta"][col] = value.strip() if isinstance(value, str) else value
        if name in first_row:
            # Several rows may describe one image (EcoTaxa: one row per object). They must agree
            # on the catalogue fields; the first row's free columns are kept.
            for field in FIELDS:
                if record.get(field) != out[name].get(field):
                    problems.add(line, cols[field] or key_col, record.get(field),
                                 f"{name} is described again (first on row {first_row[name]}) "
                                 f"with a different {field}: {out[name].get(field)!r}")
            continue
        first_row[name] = line
        out[name] = record
    problems.raise_if_any()
    return out


def lookup_key(metadata: dict[str, dict[str, Any]], name: str) -> str | None:
    """The sidecar key describing an original name: exact match, then the bare file name."""
    if name in metadata:
        return name
    base = PurePosixPath(name.replace("\\", "/")).name
    return base if base in metadata else None


def lookup(metadata: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The record for an original name: exact match, then the bare file name."""
    key = lookup_key(metadata, name)
    return None if key is None else metadata[key]
