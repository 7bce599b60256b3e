"""Clients of tritonserver reconnect within a second of a server coming (back) up, however long it was away."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
from tritonclient.utils import InferenceServerException

from serving.channels import MAX_RECONNECT_MS, grpc_client
from serving.server import free_ports

# gRPC's own backoff after this long without a server: attempts at about 0, 1, 2.6, 5.2, 9.3 and 15.8 s, and the
# next one near 26 s, so a default channel would still be waiting ten seconds after the server came up
AWAY_S = 17.0


def _answers(client) -> bool:
    """Whether anything answered at the channel's address (a bare gRPC server says UNIMPLEMENTED)."""
    try:
        client.is_server_ready(client_timeout=1.0)
    except InferenceServerException as e:
        return "unimplemented" in str(e).lower()
    return True


def test_a_client_made_before_the_server_listens_connects_as_soon_as_it_does():
    port = free_ports().grpc
    client = grpc_client(f"127.0.0.1:{port}")
    start = time.monotonic()
    while time.monotonic() - start < AWAY_S:  # as wait_ready polls while tritonserver loads its models
        assert not _answers(client)
        time.sleep(0.5)
    server = grpc.server(futures.ThreadPoolExecutor(1))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        up = time.monotonic()
        while not _answers(client):
            assert time.monotonic() - up < 2 * MAX_RECONNECT_MS / 1000 + 1, "the channel is still backing off"
            time.sleep(0.1)
    finally:
        server.stop(None)
        client.close()


def test_the_channel_keeps_tritonclients_message_limits():
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

    from serving.channels import channel_args

    args = dict(channel_args())
    assert args["grpc.max_receive_message_length"] == MAX_GRPC_MESSAGE_SIZE
    assert args["grpc.max_reconnect_backoff_ms"] == MAX_RECONNECT_MS
