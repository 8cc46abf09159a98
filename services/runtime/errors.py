"""One error hierarchy for every service, mapped to a gRPC status in one place (`status_of`)."""

from __future__ import annotations

import grpc


class ModelyardError(Exception):
    """Base of every error the runtime maps to a status. `message` says what happened and what to fix."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ModelyardError):
    """The request is malformed: the caller must change it. Never retried."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ModelyardError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ModelyardError):
    """Out of memory at batch 1, or the request queue is full. Retryable later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReady(ModelyardError):
    """Loading, warming up, draining, or broken. Retryable on another replica."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ModelyardError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ModelyardError):
    code = grpc.StatusCode.CANCELLED


class ConfigError(ModelyardError):
    """A config file, path or value that stops a service from starting. Raised at start-up, not per request."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class FatalModelError(ModelyardError):
    """The process can no longer serve (e.g. a corrupted CUDA context): health turns NOT_SERVING."""

    code = grpc.StatusCode.INTERNAL


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message for any exception raised while serving a request."""
    if isinstance(exc, ModelyardError):
        return exc.code, exc.message
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
