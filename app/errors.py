"""JSON errors of the API and the staff routes, made in one place: `{"error": message, "code": code}`.
The message is for a person; the page and scripts branch on the code (listed in docs/api.md)."""
from __future__ import annotations

from flask import Flask

from app.core.jobs import NotAllowed
from app.core.staging import StagingError

# The code of an error that names none of its own, by its HTTP status.
CODES = {400: "invalid", 401: "sign_in", 403: "forbidden", 404: "not_found", 409: "conflict", 411: "length_required",
         413: "too_large", 422: "damaged", 502: "omero_failed", 503: "omero_unavailable", 507: "disk_full"}


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


def error_response(message: str, status: int, code: str | None = None) -> tuple[dict, int]:
    return {"error": message, "code": code or CODES.get(status, "error")}, status


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    @app.errorhandler(StagingError)
    def _error(e: ApiError | StagingError):
        return error_response(str(e), e.status, e.code)

    @app.errorhandler(NotAllowed)
    def _not_allowed(e: NotAllowed):
        return error_response(str(e), 409, "not_allowed")
