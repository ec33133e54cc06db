"""``fuse-for-ort`` on a standard Hugging Face export of all-MiniLM-L6-v2: transformers'
``AutoModel`` (eager attention), ``torch.onnx.export`` (TorchScript, opset 17), the inputs
users name. transformers 5 writes the attention mask as a ``Where`` over Ranges and a
Gather of the flattened mask, which only the mask prover (ir/attention/mask_probe.py)
recognises; the output Reshape's ``-1`` heads axis is pinned by the traced heads."""

import numpy as np
import onnx
import pytest
from pass_checks import Within, assert_close, checked_proto, run_ort

import onnxpress
from onnxpress.passes.ort_fusion import FuseForOrt

pytestmark = pytest.mark.slow

TOL = 1e-5  # max |fused - original| as a fraction of the output's max |value| (~5e-7 seen)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def hf_export(tmp_path_factory):
    # the [torch] extra and sentence-transformers (dev, which requires transformers) are
    # what CI installs: a missing one must fail here, not skip
    import torch
    import transformers

    from onnxpress.models.minilm import model_dir

    bert = transformers.AutoModel.from_pretrained(str(model_dir()),
                                                  attn_implementation="eager").eval()

    class Hidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    tokens = torch.ones((1, 16), dtype=torch.int64)
    path = tmp_path_factory.mktemp("hf-export") / "hf_minilm.onnx"
    torch.onnx.export(Hidden(bert).eval(), (tokens, tokens, torch.zeros_like(tokens)), path,
                      input_names=list(INPUTS), output_names=["last_hidden_state"],
                      dynamic_axes={name: {0: "batch", 1: "sequence"} for name in INPUTS},
                      opset_version=17, dynamo=False)
    return path


def count(proto, op_type):
    return sum(1 for n in proto.graph.node if n.op_type == op_type)


def test_hf_export_attention_is_fused_with_its_mask(hf_export):
    from onnxpress.models.minilm import EXAMPLE_SENTENCES, tokenize

    model = onnxpress.load(hf_export)
    result = FuseForOrt()(model)
    out = checked_proto(model)
    assert {k: result.stats[k] for k in ("attention", "gelu", "bias_gelu")} == {
        "attention": 6, "gelu": 6, "bias_gelu": 6}, result.notes
    assert count(out, "Attention") == 6 and count(out, "Softmax") == 0
    assert count(out, "Where") == 0 and count(out, "Range") == 0  # the mask subgraph is gone
    masks = {n.input[3] for n in out.graph.node if n.op_type == "Attention"}
    assert len(masks) == 1  # one int32 Cast of attention_mask, shared by all six
    for node in out.graph.node:
        if node.op_type == "Attention":
            (fill,) = [a.f for a in node.attribute if a.name == "mask_filter_value"]
            assert fill == -50.0  # the exporter's float32 minimum, raised (attention.py)

    original = onnx.load(hf_export)
    feeds = tokenize(list(EXAMPLE_SENTENCES))  # 3 to ~35 tokens: real padding
    assert (feeds["attention_mask"] == 0).any()
    assert_close(run_ort(original, feeds, optimize=True), run_ort(out, feeds, optimize=True),
                 Within(TOL))

    # A sequence whose mask is all zeros: the original's float32-minimum fill makes its
    # attention uniform, the fused -50 does not (attention.py): that sequence differs (by
    # ~3.6; it agrees with mask_value=None), the others still agree.
    feeds["attention_mask"][1] = 0
    want = run_ort(original, feeds, optimize=True)["last_hidden_state"]
    got = run_ort(out, feeds, optimize=True)["last_hidden_state"]
    others = [0, 2, 3]
    scale = np.abs(want[others]).max()
    assert np.abs(want[others] - got[others]).max() <= TOL * scale
