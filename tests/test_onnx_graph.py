"""The exported graph without its softmax NaN guards (zoo.onnx_graph): the same rows, a NaN row refused, and
a graph that needs its guards exported again with them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import zoo
from tests.tiny_models import make_tiny_text_folder
from zoo import onnx_graph
from zoo import runtime as rt


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    """The text tower of a tiny BERT (two layers), as the runtime exports it."""
    folder = make_tiny_text_folder(tmp_path_factory.mktemp("tiny-text"), pooling="mean")
    (text,) = zoo.create(str(folder), device="cpu", runtime="torch")._towers()
    return text


def ops(path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def test_the_guards_go_and_the_rows_stay(tower, tmp_path):
    """Each attention's ``Where(IsNaN(softmax))`` is dropped from the export, and ONNX Runtime gives the
    guarded graph's rows to the last bit on the check batches (padded ones among them)."""
    import onnxruntime as ort

    batches = tower.batches()
    assert rt._export(tower, batches[0], tmp_path / "bare.onnx") == 2  # one per layer
    assert rt._export(tower, batches[0], tmp_path / "guarded.onnx", guards=True) == 0
    assert ops(tmp_path / "guarded.onnx").count("IsNaN") == 2 and "IsNaN" not in ops(tmp_path / "bare.onnx")
    assert ops(tmp_path / "bare.onnx").count("Where") == ops(tmp_path / "guarded.onnx").count("Where") - 2
    sessions = [ort.InferenceSession(str(tmp_path / f"{n}.onnx"), providers=["CPUExecutionProvider"])
                for n in ("bare", "guarded")]
    assert any((b["attention_mask"] == 0).any() for b in batches)
    for b in batches:
        feed = {i.name: b[i.name].numpy() for i in sessions[0].get_inputs()}
        np.testing.assert_array_equal(sessions[0].run(None, feed)[0], sessions[1].run(None, feed)[0])
    assert onnx_graph.drop_softmax_nan_guards(tmp_path / "bare.onnx") == 0  # nothing left to drop


class FloatMaskAttention(torch.nn.Module):
    """Two attention layers under a float mask of -inf (causal, left padding): a padded row is all masked,
    torch gives zeros for it, ONNX Runtime NaN, which the second layer spreads to every row of its text."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.qkv = torch.nn.Embedding(50, 16), torch.nn.Linear(16, 48)

    def forward(self, input_ids, attention_mask):
        x = self.emb(input_ids)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, 2, 8).permute(2, 0, 3, 1, 4)
        keep = attention_mask[:, None, None, :].bool() & torch.ones(n, n, dtype=torch.bool).tril()[None, None]
        bias = torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
        h = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        h = torch.nn.functional.scaled_dot_product_attention(h, h, h, attn_mask=bias)
        return h.transpose(1, 2).reshape(b, n, 16)[:, -1]


def left_padded() -> list[dict]:
    ids = torch.randint(1, 50, (4, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(4, 7, dtype=torch.long)
    for row, n in enumerate((7, 5, 3, 1)):
        mask[row, : 7 - n] = 0
    return [{"input_ids": ids, "attention_mask": mask}]


def test_an_export_with_nan_rows_is_refused(tmp_path):
    """NaN rows fail the check against torch (a NaN cosine compares false with every bar)."""
    with torch.no_grad():
        assert torch.isfinite(FloatMaskAttention()(**left_padded()[0])).all()
    tower = rt.Tower("text", FloatMaskAttention().eval(), left_padded, ("input_ids", "attention_mask"))
    with pytest.raises(rt.RuntimeCheckError, match="least cosine nan"):
        rt._make(tower, tmp_path, "onnx", "cpu")
    assert not (tmp_path / "fp32.onnx").exists()


def test_a_graph_that_needs_its_guards_is_exported_again_with_them(tower, tmp_path, monkeypatch):
    """Where the guard-free graph misses the check, the tower is exported again with its guards and that
    graph, checked, is the one kept."""
    real = onnx_graph.drop_softmax_nan_guards

    def drop_and_break(path):  # the guards were needed: this graph's rows come out NaN
        dropped = real(path)
        model = onnx.load(str(path))
        out = model.graph.output[0].name
        for node in model.graph.node:
            node.output[:] = [f"{o}_pre" if o == out else o for o in node.output]
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(np.nan, np.float32), "nan"))
        model.graph.node.append(onnx.helper.make_node("Mul", [f"{out}_pre", "nan"], [out]))
        onnx.save(model, str(path))
        return dropped

    monkeypatch.setattr(onnx_graph, "drop_softmax_nan_guards", drop_and_break)
    check = rt._make(tower, tmp_path, "onnx", "cpu")
    assert check["onnx"]["min_cos"] >= rt.FP32_MIN_COS
    assert ops(tmp_path / "fp32.onnx").count("IsNaN") == 2
