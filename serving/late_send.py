"""One answer per batch goes out just after ``execute`` returns, so Triton's batcher hears of the next requests.

With a queue policy (priority levels, ``max_queue_size``, timeouts), Triton's dynamic batcher does not prefetch:
it hands a batch over only while the instance's thread waits for one, and an arriving request wakes it only then.
When ``execute`` returns its responses, Triton sends them before the instance's thread is back waiting; clients
that answer at once send their next requests into that gap, nobody wakes the batcher when the instance is
free again, and it sleeps out its 500 ms timer (``docs/benchmarks.md`` has the reading of Triton's source: 16
clients got 0.56× the in-process throughput, and one client a p99 of half a second).

So ``execute`` returns every response but one (a response returned is sent by Triton, and a stub that dies
while computing has its whole batch answered with an error by Triton) and hands that one to :class:`LateSender`,
whose thread sends it through the request's response sender (allowed for a non-decoupled python model since
24.06) :data:`DELAY_S` after ``execute`` has returned: Triton has then sent the other responses and the
instance is waiting again (sent at once, it often overtook them). Its client's next request wakes the batcher
for everything queued meanwhile. Measured: 16 one-sentence clients 0.76× in-process with no delay, 1.01× with
it, p99 650 → 213 ms (``docs/benchmarks.md``).

The cost: a stub killed from outside (SIGKILL) in the millisecond or two between ``execute`` returning and that
send leaves that one request unanswered; a stub that dies computing (a crash, the OOM killer, the supervisor
ending a hung one) does not. ``ZOO_LATE_ANSWER=0`` in the server's environment returns every response from
``execute`` instead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: how long after ``execute`` returns the held-back response is sent
DELAY_S = 0.001


def enabled() -> bool:
    """Whether one response per batch goes out late (``$ZOO_LATE_ANSWER``, default on; :mod:`zoo.settings`)."""
    from zoo.settings import Settings

    return Settings.from_env().late_answer


class LateSender:
    """A thread that sends ``(sender, response, flags)`` in the order given."""

    def __init__(self, name: str = "zoo-late-send") -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def send(self, sender: Any, response: Any, flags: int) -> None:
        """Queue one response; the thread sends it :data:`DELAY_S` from now."""
        self._queue.put((time.monotonic() + DELAY_S, sender, response, flags))

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            due, sender, response, flags = job
            time.sleep(max(0.0, due - time.monotonic()))  # Triton sends the returned responses, frees the instance
            try:
                sender.send(response, flags=flags)
            except Exception:  # the request was cancelled, or its client is gone: later ones still go out
                log.exception("could not send a response")

    def close(self, timeout: float = 30.0) -> None:
        """Send what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)
