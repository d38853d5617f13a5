"""Row ids given by callers: parsed and range-checked before they reach the database.

Every id column is a 32-bit ``Integer``. SQLite accepts larger values until they pass 2**63 (then
the driver raises ``OverflowError``); PostgreSQL rejects anything over 2**31 - 1 with a
``DataError``. Either way a huge id in a URL would surface as a server error, so lookups check the
range here and answer a :class:`~aqualens.core.errors.ValidationError` that names the field.
"""

from __future__ import annotations

from typing import Any

from aqualens.core.errors import ValidationError

#: The largest value an id (and a row count, offset or int column) can hold on every backend.
MAX_ID = 2**31 - 1
VALID_ID = f"an integer id between 1 and {MAX_ID}"


def is_decimal(text: Any) -> bool:
    """True for a non-empty string of ASCII digits (``str.isdigit`` also accepts '²' and '٣')."""
    return isinstance(text, str) and text.isascii() and text.isdigit()


def check_id(value: int, field: str) -> int:
    """``value`` when it fits an id column; ValidationError naming ``field`` otherwise.

    Zero and negative values within range are returned as is: they simply match no row (NotFound
    is the caller's answer), which keeps "no such id" uniform for in-range values.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{field} must be an integer, not {value!r}", field=field,
                              valid=VALID_ID)
    if not -MAX_ID - 1 <= value <= MAX_ID:
        raise ValidationError(f"{field} {value} is out of range", field=field, valid=VALID_ID)
    return value


def id_from_ref(ref: int | str, field: str) -> int | None:
    """The id in ``ref`` (an int or a string of ASCII digits), range-checked; None when ``ref`` is
    a name or other non-numeric reference."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        return check_id(ref, field)
    if is_decimal(ref):
        return check_id(int(ref), field)
    return None


def check_count(value: int, field: str, lo: int = 0, hi: int = MAX_ID) -> int:
    """A limit, offset or count within ``lo..hi`` (at most what an SQL integer holds)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(f"{field} {value!r} is out of range", field=field,
                              valid=f"an integer from {lo} to {hi}")
    return value
