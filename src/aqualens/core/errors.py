"""One error hierarchy for the whole platform.

Every error names what was wrong (``field``: a file, row, column or request field) and, where it
helps, what is valid. The API maps these classes to HTTP status codes in one place
(:mod:`aqualens.api.errors`); the CLI prints the message and exits non-zero.
"""

from __future__ import annotations

from typing import Any


class AquaLensError(Exception):
    """Base class of every error AquaLens raises on purpose."""

    #: HTTP status the API answers with; the mapping itself lives in ``aqualens.api.errors``.
    code = "error"

    def __init__(self, message: str, *, field: str | None = None, valid: str | None = None,
                 details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.valid = valid
        self.details = details

    def __str__(self) -> str:
        text = self.message
        if self.field and self.field not in text:
            text = f"{self.field}: {text}"
        if self.valid:
            text = f"{text} (valid: {self.valid})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, used by the API and by JSON reports."""
        out: dict[str, Any] = {"error": self.code, "message": str(self)}
        if self.field:
            out["field"] = self.field
        if self.valid:
            out["valid"] = self.valid
        if self.details is not None:
            out["details"] = self.details
        return out


class ConfigError(AquaLensError):
    """A setting is missing or invalid."""

    code = "config"


class ValidationError(AquaLensError):
    """Input is malformed: a request field, a file, a row."""

    code = "invalid"


class NotFound(AquaLensError):
    """The thing asked for does not exist, or the caller may not see it."""

    code = "not_found"


class Conflict(AquaLensError):
    """The request clashes with what is stored (a duplicate name, a frozen version)."""

    code = "conflict"


class Unauthorized(AquaLensError):
    """No or an unknown API token."""

    code = "unauthorized"


class PermissionDenied(AquaLensError):
    """The caller is known but may not do this."""

    code = "forbidden"


class TooLarge(ValidationError):
    """A file or request exceeds a configured limit."""

    code = "too_large"


class UnsupportedMedia(ValidationError):
    """A file is not of a type we accept (not an image, unknown archive)."""

    code = "unsupported_media"


class FormatError(ValidationError):
    """An annotation or metadata file cannot be read; raised by format plugins."""

    code = "format"


class IntegrityError(AquaLensError):
    """Stored bytes do not match their checksum (a tampered package, a corrupted blob)."""

    code = "integrity"


class StorageError(AquaLensError):
    """The object store failed (unreachable, permission, disk full)."""

    code = "storage"


class ModelError(AquaLensError):
    """A model cannot be loaded or run."""

    code = "model"


class JobError(AquaLensError):
    """A job cannot be created, changed or run."""

    code = "job"
