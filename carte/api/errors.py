"""Typed errors shared by daemon and client.

A command handler raises one of these; the API maps `status` to the HTTP status and sends
``{"error": {"code": code, "message": message}}``; the client turns that back into one line.
"""

from typing import ClassVar


class CarteError(Exception):
    """An error a user can act on. `message` names the thing, the problem and the fix."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(CarteError):
    code = "invalid_argument"
    status = 400


class NotFound(CarteError):
    code = "not_found"
    status = 404


class Conflict(CarteError):
    code = "conflict"
    status = 409


class Unavailable(CarteError):
    """A feature or handler is not available (skipped, disabled, kernel lacks it)."""

    code = "unavailable"
    status = 503


class Internal(CarteError):
    code = "internal"
    status = 500


ERRORS_BY_CODE: dict[str, type[CarteError]] = {
    cls.code: cls for cls in (InvalidArgument, NotFound, Conflict, Unavailable, Internal)
}
