"""Service errors, each mapped to one HTTP status by the app's exception handler."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(ServiceError):
    status_code = 404


class ConflictError(ServiceError):
    status_code = 409


class UnauthorizedError(ServiceError):
    status_code = 401


class ForbiddenError(ServiceError):
    status_code = 403


class InvalidError(ServiceError):
    status_code = 422


class PayloadTooLargeError(ServiceError):
    status_code = 413
