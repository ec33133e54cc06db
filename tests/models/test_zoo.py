"""The model zoo: every entry exports (dynamo exporter, dynamic batch) to a file that passes
the full ONNX checker, ONNX Runtime agrees with PyTorch at a batch the export did not see,
the IR round trip is lossless, and the weights have the shapes the zoo's descriptions claim.

``minilm`` is left out on purpose, not skipped: it loads real pretrained weights through the
``[minilm]`` extra and has tests of its own. Every other entry of ``ZOO`` is covered, new
ones included (their shape facts must be added to ``FACTS``).

Each model is exported once: ``exported`` is a module-scoped fixture parametrized by name,
so pytest runs all checks of one model together and then drops its files and module.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import onnxpress
from onnxpress.backends.ort_runner import Runner
from onnxpress.errors import BadInputError
from onnxpress.models import zoo

NAMES = [name for name in zoo.ZOO if name != "minilm"]
BATCH = 3  # the export example uses batch 2; 3 proves the batch axis is dynamic
TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the zoo claims about a model, checked against the exported initializers/graph."""

    params: tuple[float, float]  # trainable parameters, millions (inclusive range)
    shapes: dict[str, tuple[int, ...]]  # initializer name -> shape
    attention: tuple[int, int, int | str] | None = None  # (depth, heads, tokens): Softmaxes
    convs: tuple[int, int] | None = None  # (Conv nodes, of which depthwise)


FACTS = {
    "deit_tiny": Facts((5.6, 5.8), {"pos_embed": (1, 197, 192), "head.weight": (1000, 192),
                                    "patch_embed.proj.weight": (192, 3, 16, 16)},
                       attention=(12, 3, 197)),
    "deit_small": Facts((21.8, 22.3), {"pos_embed": (1, 197, 384), "head.weight": (1000, 384)},
                        attention=(12, 6, 197)),
    "vit_32": Facts((2.6, 2.8), {"pos_embed": (1, 65, 192), "head.weight": (10, 192),
                                 "patch_embed.proj.weight": (192, 3, 4, 4)},
                    attention=(6, 3, 65)),
    "resnet18": Facts((11.6, 11.8), {"conv1.weight": (64, 3, 7, 7), "fc.weight": (1000, 512)},
                      convs=(20, 0)),
    "resnet50": Facts((25.4, 25.7), {"fc.weight": (1000, 2048),
                                     "layer4.2.conv3.weight": (2048, 512, 1, 1)},
                      convs=(53, 0)),
    "mobilenet_v2": Facts((3.4, 3.6), {"features.0.0.weight": (32, 3, 3, 3),
                                       "features.18.0.weight": (1280, 320, 1, 1),
                                       "classifier.1.weight": (1000, 1280)},
                          convs=(52, 17)),
    "bert_small": Facts((11.0, 11.3), {"embeddings.word_embeddings.weight": (30522, 256),
                                       "layer.0.intermediate.weight": (1024, 256)},
                        attention=(4, 4, "sequence")),
}


@dataclasses.dataclass
class Exported:
    """One zoo model exported to ``path``, a separately built module, and batch-3 feeds."""

    entry: zoo.ZooModel
    path: Path
    module: torch.nn.Module
    feeds: dict[str, np.ndarray]

    @functools.cached_property
    def proto(self) -> onnx.ModelProto:
        return onnx.load(self.path)

    @functools.cached_property
    def ort_outputs(self) -> dict[str, np.ndarray]:
        return Runner(self.path).run(self.feeds)


@pytest.fixture(scope="module", params=NAMES)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    entry = zoo.get(request.param)
    path = entry.export(tmp_path_factory.mktemp(entry.name) / f"{entry.name}.onnx")
    # A second build(): matching PyTorch below also shows that the builders are deterministic.
    feeds = {n: t.numpy() for n, t in zip(entry.input_names, entry.example_inputs(BATCH))}
    return Exported(entry, path, entry.build(), feeds)


def test_export_is_valid_onnx_with_a_dynamic_batch(exported: Exported) -> None:
    onnx.checker.check_model(str(exported.path), full_check=True)
    graph = exported.proto.graph
    assert [v.name for v in graph.input] == list(exported.entry.input_names)
    assert [v.name for v in graph.output] == list(exported.entry.output_names)
    for value in [*graph.input, *graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name


def test_ort_matches_torch_at_another_batch(exported: Exported) -> None:
    """ONNX Runtime vs PyTorch at batch 3, elementwise:
    ``|ort - torch| <= 1e-4 * |torch| + 1e-4 * max|torch|`` (float32 kernels sum in another
    order; the worst seen, resnet50, is about 2.5e-5 of the output's magnitude)."""
    with torch.no_grad():
        expected = exported.module(*(torch.from_numpy(a) for a in exported.feeds.values()))
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = exported.ort_outputs
    assert list(got) == list(exported.entry.output_names)
    for name, want in zip(exported.entry.output_names, expected):
        want = want.numpy()
        assert got[name].shape == want.shape and want.shape[0] == BATCH
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(
            got[name], want, rtol=TOLERANCE, atol=TOLERANCE * scale, err_msg=name
        )


def test_ir_round_trip_is_bit_identical(exported: Exported, tmp_path: Path) -> None:
    model = onnxpress.load(exported.path)
    onnxpress.ir.verify(model)
    again = Runner(onnxpress.save(model, tmp_path / "again.onnx")).run(exported.feeds)
    assert list(again) == list(exported.ort_outputs)
    for name, want in exported.ort_outputs.items():
        np.testing.assert_array_equal(again[name], want, err_msg=name)


def test_exported_weights_match_the_zoo_description(exported: Exported) -> None:
    facts = FACTS.get(exported.entry.name)
    assert facts is not None, f"add the shape facts of zoo model {exported.entry.name!r}"
    graph = exported.proto.graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    # Parameters = float initializers less BN running statistics (buffers, not parameters).
    params = sum(
        int(np.prod(t.dims)) for t in graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT
        and not t.name.endswith((".running_mean", ".running_var"))
    )
    low, high = facts.params
    assert low * 1e6 <= params <= high * 1e6
    assert params == sum(p.numel() for p in exported.module.parameters())
    for name, shape in facts.shapes.items():
        assert shapes.get(name) == shape, name
    if facts.attention is not None:
        depth, heads, tokens = facts.attention
        value_shapes = {
            v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in graph.value_info
        }
        softmax = [value_shapes[n.output[0]] for n in graph.node if n.op_type == "Softmax"]
        assert softmax == [["batch", heads, tokens, tokens]] * depth
    if facts.convs is not None:
        convs = [n for n in graph.node if n.op_type == "Conv"]
        depthwise = [n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
        assert (len(convs), len(depthwise)) == facts.convs


def test_cli_lists_the_whole_zoo() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "onnxpress.models.zoo"], capture_output=True, text=True, check=True
    ).stdout
    assert [line.split()[0] for line in listing.splitlines()] == list(zoo.ZOO)


def test_unknown_zoo_name_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="no zoo model 'nope'; known: deit_tiny"):
        zoo.get("nope")
    with pytest.raises(BadInputError, match="no zoo model 'nope'"):
        zoo.main(["nope"])
