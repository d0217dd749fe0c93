"""The API's error type: every failure a client sees is `{"id", "message", "status_code"}`."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error meant for the client. `id` is machine-readable and stable; `message` is for people."""

    def __init__(
        self,
        status: int,
        error_id: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message
        self.headers = headers or {}
        self.details = details

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.error_id, "message": self.message, "status_code": self.status}
        if self.details:
            out["details"] = self.details
        return out


def bad_request(error_id: str, message: str, **details: Any) -> ApiError:
    return ApiError(400, error_id, message, details=details or None)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what}.not_found", f"{what.capitalize()} not found")


def forbidden(message: str = "You do not have permission to do that") -> ApiError:
    return ApiError(403, "api.forbidden", message)


def conflict(error_id: str, message: str) -> ApiError:
    return ApiError(409, error_id, message)
