"""ONNX Runtime on tensors where they are: I/O binding for a session on a CUDA device.

``session.run`` takes numpy arrays, so a batch already on the GPU would be copied to the host and back before
every forward pass. Bound, the session reads each input from the memory torch holds it in and leaves its output
on the device for ONNX Runtime to hand over once. The same code binds host memory on the CPU (``"cpu"``), which
is how the tests check it against ``session.run`` without a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np


@cache
def _numpy_type(dtype: Any) -> type:
    """The numpy scalar type of a torch dtype (what ``bind_input`` names an element type by), worked out once per
    dtype rather than on every forward pass."""
    import torch

    return torch.empty(0, dtype=dtype).numpy().dtype.type


def run_bound(session: Any, inputs: Mapping[str, Any], names: Sequence[str], device: str) -> Any:
    """``session``'s first output for the torch tensors ``inputs`` (those in ``names``), which live on ``device``
    ("cpu", "cuda" or "cuda:N"), as a torch tensor on that device."""
    import torch

    kind, _, index = device.partition(":")
    device_id = int(index or 0)
    binding = session.io_binding()
    kept = []  # the contiguous tensors must outlive the run: ONNX Runtime reads their memory
    for name in names:
        tensor = inputs[name].contiguous()
        kept.append(tensor)
        binding.bind_input(name, kind, device_id, _numpy_type(tensor.dtype), list(tensor.shape), tensor.data_ptr())
    binding.bind_output(session.get_outputs()[0].name, kind, device_id)
    session.run_with_iobinding(binding)
    out = binding.get_outputs()[0]
    # the output (pooled or token embeddings) is copied once; what follows (pooling, normalizing) stays in torch
    return torch.from_numpy(np.asarray(out.numpy())).to(device)
