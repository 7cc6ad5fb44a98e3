"""One error base class for everything pixelbatch raises on purpose.

Each error carries a stable machine-readable ``code`` and the HTTP status the API answers
with, so layers below the API never import HTTP machinery and one handler renders them all.
"""

from __future__ import annotations

from typing import Any


class PixelbatchError(Exception):
    code: str = "error"
    status_code: int = 400
    # Extra response headers the API sends with this error (Retry-After, WWW-Authenticate).
    headers: dict[str, str] | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (the transform pool); keep them picklable.
        return (_rebuild, (type(self), self.message, self.code, self.status_code, self.details))

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


def _rebuild(
    cls: type[PixelbatchError], message: str, code: str, status_code: int, details: Any
) -> PixelbatchError:
    err = cls.__new__(cls)
    PixelbatchError.__init__(err, message, code=code, status_code=status_code, details=details)
    return err


class NotFound(PixelbatchError):
    code = "not_found"
    status_code = 404


class Conflict(PixelbatchError):
    code = "conflict"
    status_code = 409


class InvalidInput(PixelbatchError):
    code = "invalid_input"
    status_code = 400


class ImageError(PixelbatchError):
    """A single image could not be processed; fails that image only."""

    code = "image_error"
    status_code = 422


class FetchError(PixelbatchError):
    """A single URL could not be downloaded (or was refused); fails that image only."""

    code = "fetch_error"
    status_code = 422

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.retryable = retryable
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_fetch,
            (self.message, self.code, self.retryable, self.retry_after, self.details),
        )


def _rebuild_fetch(
    message: str, code: str, retryable: bool, retry_after: float | None, details: Any
) -> FetchError:
    return FetchError(
        message, code=code, retryable=retryable, retry_after=retry_after, details=details
    )
