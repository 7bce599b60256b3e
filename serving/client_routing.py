"""Where a client's request goes and what a refusal means: the replicas behind a URL and their order, the
priority a request is sent at, the pause before a refused request is sent again, and the `zoo` error a server
error stands for. Pure functions and one small class, used by :mod:`serving.client_core`'s plans."""

from __future__ import annotations

import ipaddress
import itertools
import random
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from zoo.errors import (
    InputError,
    InvalidArgumentError,
    ModelUnavailableError,
    OverloadedError,
    ServerError,
    ZooError,
    choices,
    from_wire,
    is_wire,
)

from . import contract

# what Triton says while a model is unloaded for a restart, just before the supervisor notices a dead stub, or
# while the server shuts down (its messages start "[request id: …]", so only zoo's own wire errors are excluded)
_UNAVAILABLE_HINTS = ("has no available versions", "is not healthy", "is not ready",
                      "stopped accepting new inference requests")
# Triton's refusals before any work (gRPC UNAVAILABLE; the texts of tritonserver 2.51): the model's queue is full
# (max_queue_size), or a request waited in it past its timeout (default_timeout_microseconds)
OVERLOAD_HINTS = ("Exceeds maximum queue size", "Request timeout expired")
REPLICA_COOLDOWN_S = 5.0  # a replica that just failed is tried after the others for this long
OVERLOAD_COOLDOWN_S = 1.0  # an overloaded replica is busy, not gone: tried after the others only this long
BACKOFF_FIRST_S = 0.1  # the wait before the first retry of a refused request; it doubles with each retry …
BACKOFF_CAP_S = 5.0  # … up to this


def replica_urls(url: str | Sequence[str]) -> list[str]:
    """The ``host:port`` of every replica ``url`` names: a comma-separated list or a sequence, each host name
    expanded to every address it resolves to (IPv4 and IPv6, in resolver order, duplicates dropped)."""
    parts = [u.strip() for u in (url.split(",") if isinstance(url, str) else url) if u.strip()]
    if not parts:
        raise ServerError("no server URL given")
    out: list[str] = []
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit():
            raise ServerError(f"server URL {part!r} is not host:port")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
            addresses = [host]
        except ValueError:  # a name: one replica per address it resolves to
            try:
                infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except socket.gaierror as err:
                raise ServerError(f"cannot resolve {host!r}: {err.strerror}") from None
            addresses = list(dict.fromkeys(info[4][0] for info in infos))
        out += [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]
    return list(dict.fromkeys(out))


class Replicas:
    """Round-robin order over replica URLs, with the ones that recently failed moved to the back."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self._turn = itertools.count()
        self._down_until = dict.fromkeys(urls, 0.0)
        self._lock = threading.Lock()

    def order(self) -> list[str]:
        """Every replica, in the order to try them for the next request."""
        with self._lock:
            start = next(self._turn) % len(self.urls)
        rotated = self.urls[start:] + self.urls[:start]
        now = time.monotonic()
        return sorted(rotated, key=lambda u: self._down_until[u] > now)  # stable: healthy ones first, in turn

    def failed(self, url: str, seconds: float = REPLICA_COOLDOWN_S) -> None:
        """Note that ``url`` just failed (unavailable, or overloaded): it goes last for ``seconds``."""
        self._down_until[url] = max(self._down_until[url], time.monotonic() + seconds)  # never shortened


def priority_level(priority: str | None) -> int:
    """Triton's priority level of a priority name (:data:`contract.PRIORITIES`); ``None`` gives 0, which Triton
    serves at the model's default level."""
    if priority is None:
        return 0
    if not isinstance(priority, str) or priority not in contract.PRIORITIES:
        raise InvalidArgumentError(f"unknown priority {priority!r}; valid: {choices(contract.PRIORITIES)}",
                                   "priority")
    return contract.PRIORITIES[priority]


def backoff(attempt: int, err: ZooError | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0 for the first) of a refused request: :data:`BACKOFF_FIRST_S`
    doubling up to :data:`BACKOFF_CAP_S`, drawn from the upper half of that (jitter: clients refused together do
    not all come back together), and never less than the pause the server asked for (``err.retry_after``)."""
    wait = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** attempt) * random.uniform(0.5, 1.0)
    return max(wait, getattr(err, "retry_after", None) or 0.0)


def _remote_error(err: Any, offset: int) -> ZooError:
    """The `zoo` error a server error encodes, item index shifted to the whole call; a server that refused the
    request before any work, being overloaded, gives :class:`OverloadedError`; a replica that is gone or a model
    that is not ready gives :class:`ModelUnavailableError`."""
    text = err.message() or str(err)
    status = err.status()
    # RESOURCE_EXHAUSTED also says a message is over gRPC's size limit: that one no pause can cure
    if not is_wire(text) and ((status == "StatusCode.RESOURCE_EXHAUSTED" and "larger than max" not in text) or
                              (status == "StatusCode.UNAVAILABLE" and any(h in text for h in OVERLOAD_HINTS))):
        return OverloadedError(f"server overloaded: the request was refused before any work (retry after a "
                               f"pause): {text}")
    if not is_wire(text) and (status == "StatusCode.UNAVAILABLE" or any(h in text for h in _UNAVAILABLE_HINTS)):
        return ModelUnavailableError(f"model not available right now (retry later): {text}")
    zerr = from_wire(text)
    return InputError(zerr.index + offset, zerr.reason) if isinstance(zerr, InputError) else zerr


def _raise_remote(err: Any, offset: int) -> None:
    """Re-raise a server error as the `zoo` error it encodes (:func:`_remote_error`)."""
    raise _remote_error(err, offset) from None
