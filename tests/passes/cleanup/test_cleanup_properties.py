"""Property-based tests of the cleanup passes on random valid ONNX graphs
(``random_graphs``): each pass must leave a model that ``verify`` and ``onnx.checker``
accept and that ONNX Runtime runs to the same outputs (``cleanup_checks``)."""


import onnx
import pytest
from cleanup_checks import check_pass, feeds_for, reference_outputs
from hypothesis import given
from random_graphs import APPROXIMATE, LOSSLESS, PROPERTY_SETTINGS, random_models

# --------------------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(case=random_models())
def test_generator_makes_valid_runnable_models(case):
    proto, seed = case
    onnx.checker.check_model(proto, full_check=True)
    outputs = reference_outputs(proto, seed, feeds_for(proto, seed))
    assert list(outputs) == [o.name for o in proto.graph.output]


@pytest.mark.parametrize("pass_name", LOSSLESS + APPROXIMATE)
@PROPERTY_SETTINGS
@given(case=random_models())
def test_pass_keeps_model_valid_and_outputs_unchanged(pass_name, case):
    proto, seed = case
    check_pass(pass_name, proto, seed)


