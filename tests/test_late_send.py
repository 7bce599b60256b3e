"""serving.late_send: the held-back response goes out after execute returns, in order, and none is lost."""

from __future__ import annotations

import sys
import time

from serving import late_send
from serving.late_send import LateSender


class Sender:
    def __init__(self, log):
        self.log = log

    def send(self, response=None, flags=0):
        self.log.append((time.monotonic(), response, flags))


def test_responses_go_out_after_the_delay_in_order_and_close_sends_what_is_queued():
    log: list = []
    late = LateSender()
    start = time.monotonic()
    for k in range(3):
        late.send(Sender(log), f"response {k}", 1)
    late.close()
    assert [r for _, r, _ in log] == ["response 0", "response 1", "response 2"]
    assert all(flags == 1 for *_, flags in log)
    assert log[0][0] - start >= late_send.DELAY_S


def test_a_sender_that_fails_does_not_stop_the_others():
    log: list = []

    class Gone:
        def send(self, response=None, flags=0):
            raise RuntimeError("the request was cancelled")

    late = LateSender()
    late.send(Gone(), "lost", 1)
    late.send(Sender(log), "kept", 1)
    late.close()
    assert [r for _, r, _ in log] == ["kept"]


def test_zoo_late_answer_0_returns_every_response(monkeypatch, tmp_path):
    """With $ZOO_LATE_ANSWER=0 execute returns all its responses and uses no response sender."""
    from serving.triton_model import TritonPythonModel
    from tests.test_warm_start import FakeRequest, _args, fake_pb_utils
    from tests.tiny_models import make_tiny_text_folder

    tiny_folder = make_tiny_text_folder(tmp_path / "tiny", pooling="mean")

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils(with_metrics=False))
    monkeypatch.setenv("ZOO_LATE_ANSWER", "0")
    model = TritonPythonModel()
    model.initialize(_args(tiny_folder))
    requests = [FakeRequest({"TEXT": [b"one"]}), FakeRequest({"TEXT": [b"two"]})]
    returned = model.execute(requests)
    assert all(r is not None and r.error is None for r in returned)
    assert not any(r.sender.sent for r in requests)
    assert model.late is None
    model.finalize()
