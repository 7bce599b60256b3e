"""gRPC clients of tritonserver that notice a server coming back within a second.

A gRPC channel that finds nothing listening waits longer and longer before it tries again (exponential backoff,
up to two minutes): a client made while tritonserver was still loading its models, or polling a replica that
was restarted, went on failing for up to half a minute after the server was ready. Every client this package
makes comes from here, with tritonclient's own channel settings (message sizes, keep-alive) and the backoff
capped at :data:`MAX_RECONNECT_MS`.
"""

from __future__ import annotations

from typing import Any

#: the longest a channel waits between two connection attempts (gRPC's default is 120 s)
MAX_RECONNECT_MS = 1000
#: the first wait after a failed attempt (gRPC's default is 1 s)
FIRST_RECONNECT_MS = 250


def channel_args() -> list[tuple[str, Any]]:
    """tritonclient's default channel options, with the reconnection backoff capped."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", FIRST_RECONNECT_MS),
        ("grpc.min_reconnect_backoff_ms", FIRST_RECONNECT_MS),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_MS),
    ]


def grpc_client(url: str) -> Any:
    """A blocking ``tritonclient.grpc.InferenceServerClient`` for ``url`` (host:port)."""
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url, channel_args=channel_args())


def aio_client(url: str) -> Any:
    """An asyncio ``tritonclient.grpc.aio.InferenceServerClient`` for ``url`` (host:port)."""
    import tritonclient.grpc.aio as aioclient

    return aioclient.InferenceServerClient(url, channel_args=channel_args())
