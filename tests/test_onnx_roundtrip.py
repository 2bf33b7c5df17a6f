"""ONNX round trip (issue 13): ``import_onnx`` of a network ``export_onnx`` wrote gives the same layers
(the same types, in order, with the same parameters) and the same outputs."""

from collections import Counter

import numpy as np
import pytest

from cnnrun.engine.onnx import export_onnx, import_onnx

from test_onnx_export import EXAMPLES, example


def layer_types(net) -> Counter:
    """How many layers of each type hold parameters, and how many parameters there are in all."""
    return Counter(node.layer.type_name for node in net.nodes if node.name in net.params)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_an_exported_network_imports_as_the_same_network(tmp_path, path):
    net = example(path)
    export_onnx(net, tmp_path / "net.onnx")
    back = import_onnx(tmp_path / "net.onnx")
    assert back.input_shape == net.input_shape and back.output_shape == net.output_shape
    assert back.parameter_count() == net.parameter_count()
    assert layer_types(back) == layer_types(net)
    x = np.random.default_rng(0).standard_normal((2, *net.input_shape)).astype(np.float32)
    expected = net.forward(x)
    np.testing.assert_allclose(back.forward(x), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
