"""One mapping from errors to gRPC status, one test per mapping."""

from __future__ import annotations

import grpc
import pytest

from modelyard.runtime import errors


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND),
        (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.NotReady, grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.Cancelled, grpc.StatusCode.CANCELLED),
        (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
        (errors.FatalModelError, grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_maps_to_its_status_with_its_message(error: type[errors.ModelyardError], code) -> None:
    assert errors.status_of(error("what to fix")) == (code, "what to fix")


def test_anything_else_is_internal_and_names_the_exception() -> None:
    code, message = errors.status_of(KeyError("boom"))
    assert code == grpc.StatusCode.INTERNAL and "KeyError" in message
