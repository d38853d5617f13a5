"""Field checks shared by the catalogue's write functions; errors name the field."""

from __future__ import annotations

from typing import Any

from aqualens.core.errors import ValidationError


def check_text(value: Any, field: str, limit: int = 200) -> str | None:
    """A short, stripped text (None stays None; blank becomes None)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationError(f"invalid {field} {value!r}", field=field,
                              valid=f"text of at most {limit} characters")
    return value.strip() or None
