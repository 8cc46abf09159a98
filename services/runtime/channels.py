"""Client channels, built one way for every caller (service clients, the gateway, CLIs, tests).

Channel options live here once: message limits, prompt reconnects, keepalive pings, and replica balancing.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from modelyard.runtime.auth import TokenCallInterceptor, read_token
from modelyard.runtime.devices import MIB

TOKEN_FILE_ENV = "MODELYARD_SERVICE_TOKEN_FILE"
# A peer that went away (restarting, a new container) is reconnected to within about a second of its return.
# gRPC's defaults back off up to 120 s between connection attempts, so a service back after 30 s used to be
# reached only tens of seconds later. A short cap costs one refused connect per second while a peer is down.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.dns_min_time_between_resolutions_ms", 1000),  # a restarted container may come back at a new address
]
# Pings notice a peer that vanished without closing its connections (a frozen or unplugged container) in
# ~30 s instead of the call's deadline; modelyard servers accept them (runtime.server.KEEPALIVE_POLICY).
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def channel_options(max_message_mb: int = 64) -> list[tuple[str, int | str]]:
    """Options of every modelyard channel. Messages up to twice `max_message_mb` go out, so a server answers an
    oversized one with what to do (its interceptor) rather than the client failing it with a bare
    RESOURCE_EXHAUSTED; `round_robin` spreads calls over every address a DNS name resolves to."""
    return [
        ("grpc.max_send_message_length", 2 * max_message_mb * MIB),
        ("grpc.max_receive_message_length", 2 * max_message_mb * MIB),
        ("grpc.lb_policy_name", "round_robin"),
        *RECONNECT_OPTIONS,
        *KEEPALIVE_OPTIONS,
    ]


def channel(address: str, max_message_mb: int = 64, token: str | None = None) -> grpc.Channel:
    """A channel with room for `max_message_mb` messages that reconnects promptly; with `token`, every call on
    it carries `authorization: Bearer <token>`."""
    chan = grpc.insecure_channel(address, options=channel_options(max_message_mb))
    return grpc.intercept_channel(chan, TokenCallInterceptor(token)) if token else chan


def token_from(path: str | None) -> str | None:
    """The token in `path`, else in the file named by $MODELYARD_SERVICE_TOKEN_FILE, else None (CLIs)."""
    path = path or os.environ.get(TOKEN_FILE_ENV) or None
    return read_token(Path(path)) if path else None
