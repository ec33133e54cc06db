"""prune(structure=channel,ratio=0.3) on the nine classic CNNs bundled in the onnx wheel
(onnx/backend/test/data/light, exported by onnx-caffe2 at opset 9): channels come out of
every one, and the pruned model runs with the same output shapes. ZFNet's LRN is modelled
(it used to block every group), and so is a grouped Conv's output (AlexNet's conv2, 2
groups: each group loses as many channels); their weights are ConstantOfShape outputs
above the default folding cap, so their cleanup folds them all first.

ShuffleNet's bottlenecks (GConv -> BN -> Relu -> channel shuffle -> depthwise -> BN ->
GConv) come out too: the shuffle's pieces lose the same positions and the second GConv's
groups as many channels each (16 groups, 1280 of their 4464 channels); its stage trunks
stay, as each feeds a grouped Conv through a Concat of two producers' channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pass_checks import run_ort

import onnxpress

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
PRUNE = "prune(structure=channel,ratio=0.3,refit=false)"
CASES = {
    "light_squeezenet": "cleanup",
    "light_resnet50": "cleanup",
    "light_vgg19": "cleanup",
    "light_inception_v1": "cleanup",
    "light_inception_v2": "cleanup",
    "light_densenet121": "cleanup",
    "light_zfnet512": "cleanup(max_output_elements=100000000)",
    "light_bvlc_alexnet": "cleanup(max_output_elements=100000000)",
    "light_shufflenet": "cleanup(max_output_elements=100000000)",
}


def _feeds(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    (value,) = [i for i in proto.graph.input
                if i.name not in {t.name for t in proto.graph.initializer}]
    shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
    return {value.name: np.random.default_rng(0).random(shape).astype(np.float32)}


@pytest.mark.parametrize("name", list(CASES))
def test_channels_come_out_and_the_outputs_keep_their_shapes(name: str) -> None:
    path = LIGHT / f"{name}.onnx"
    model, report = onnxpress.compile(path, f"{CASES[name]},{PRUNE}", return_report=True)
    stats = report.passes[-1].stats
    assert stats["channels_removed"] > 0 and stats["groups"] > 0, stats
    feeds = _feeds(onnx.load(path))
    want, got = run_ort(str(path), feeds), run_ort(onnxpress.to_proto(model), feeds)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
