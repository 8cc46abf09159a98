"""gRPC metadata keys a caller and a service both read: named once so the two ends cannot drift apart."""

from __future__ import annotations

# The call's id: sent by the caller (the gateway keeps it across retries), echoed back in trailing metadata
# and written in the service's log line for the call.
REQUEST_ID = "x-request-id"

__all__ = ["REQUEST_ID"]
