"""from_torch: both exporters, dynamic batch, outputs equal to PyTorch's, and a lossless
round trip through the IR (ONNX Runtime outputs unchanged)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import onnxpress
from onnxpress.backends.ort_runner import Runner
from onnxpress.errors import BadInputError
from onnxpress.models import bert, resnet, vit

CASES = {
    "vit_tiny": (lambda: vit.vit_tiny_test(), lambda b: vit.example_inputs(b, 32),
                 ["pixel_values"], ["logits"]),
    "resnet18": (lambda: resnet.resnet18(num_classes=10), lambda b: resnet.example_inputs(b, 32),
                 ["pixel_values"], ["logits"]),
    "bert_small": (lambda: bert.bert_small(), lambda b: bert.example_inputs(b, 64),
                   ["input_ids", "attention_mask"], ["last_hidden_state", "pooler_output"]),
}


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_export_matches_torch_and_round_trips(name: str, exporter: str, tmp_path: Path) -> None:
    build, inputs, names_in, names_out = CASES[name]
    module = build().eval()
    example = inputs(2)  # torch.export specialises a batch of 1
    model = onnxpress.from_torch(
        module, example, input_names=names_in, output_names=names_out,
        dynamic_axes={n: {0: "batch"} for n in names_in + names_out}, exporter=exporter,
        fallback=False,
    )
    onnxpress.ir.verify(model)
    assert f"{exporter} exporter" in " ".join(model.meta["onnxpress.load_notes"])
    batch3 = inputs(3)  # a batch size the export did not see
    with torch.no_grad():
        expected = module(*batch3)
    expected = expected if isinstance(expected, tuple) else (expected,)
    feeds = {n: t.numpy() for n, t in zip(names_in, batch3)}
    got = Runner(model).run(feeds)
    for out_name, want in zip(names_out, expected):
        np.testing.assert_allclose(got[out_name], want.numpy(), rtol=1e-4, atol=1e-4)
    saved = onnxpress.save(model, tmp_path / "m.onnx")
    again = Runner(saved).run(feeds)
    for out_name in names_out:
        np.testing.assert_array_equal(again[out_name], got[out_name])


def test_export_failure_is_one_clear_error() -> None:
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("this module cannot run")

    with pytest.raises(BadInputError, match="cannot export Broken: dynamo: .*; torchscript: "):
        onnxpress.from_torch(Broken(), (torch.ones(2),))
