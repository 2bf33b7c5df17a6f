"""ONNX round trip (issue 13): ``import_onnx`` of a network ``export_onnx`` wrote gives the same layers
(as many layers with parameters of each type, as many parameters) and the same outputs; a layer that
exports as several nodes comes back as itself."""

from collections import Counter

import numpy as np
import pytest

from cnnrun.engine.onnx import export_onnx, import_onnx

from test_onnx_export import EXAMPLES, example, layer_net


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


ROUND_TRIPS = [  # layers that export as several nodes (docs/onnx.md), which the import puts back together
    ({"type": "gelu"}, (3, 4)),
    ({"type": "gelu", "approximate": "tanh"}, (3, 4)),
    ({"type": "silu"}, (3, 4, 5)),
    ({"type": "softplus", "beta": 2.0}, (3, 4)),
    ({"type": "softplus", "beta": 2.0, "threshold": 1.0}, (3, 4)),
    ({"type": "softplus", "threshold": 1.5}, (3, 4)),
    ({"type": "mish"}, (3, 4, 5)),
    ({"type": "hardswish"}, (3, 4, 5)),
    ({"type": "channel_shuffle", "groups": 3}, (6, 2, 3)),
    ({"type": "pixel_unshuffle", "downscale_factor": 2}, (2, 4, 6)),
    ({"type": "upsample", "size": [7, 5]}, (2, 3, 4)),
    ({"type": "upsample", "size": [5, 9], "mode": "bilinear", "align_corners": True}, (2, 3, 4)),
    ({"type": "batchnorm", "track_running_stats": False}, (3, 4, 5)),
    ({"type": "batchnorm", "track_running_stats": False, "affine": False}, (4,)),
    ({"type": "group_norm", "num_groups": 2}, (4, 3, 5)),
    ({"type": "group_norm", "num_groups": 4, "affine": False}, (4, 6)),
    ({"type": "layer_norm", "normalized_shape": [4, 5]}, (3, 4, 5)),
    ({"type": "layer_norm", "normalized_shape": 3, "channels_first": True}, (3, 4, 5)),
    ({"type": "layer_norm", "normalized_shape": 3, "channels_first": True, "elementwise_affine": False}, (3, 4, 5)),
    ({"type": "adaptive_avgpool2d", "output_size": [3, None]}, (2, 7, 5)),
    ({"type": "adaptive_avgpool2d", "output_size": [3, 2]}, (2, 5, 7)),
    ({"type": "adaptive_maxpool2d", "output_size": [3, 2]}, (2, 5, 7)),
    ({"type": "pad", "padding": [1, 0, 3, 2], "mode": "circular"}, (2, 3, 4)),
    ({"type": "pad", "padding": [0, 2], "mode": "circular"}, (2, 5)),
]


@pytest.mark.parametrize("opset", [None, 13, 18])  # 18: ReduceMean axes and Resize axes as inputs
@pytest.mark.parametrize("layer, shape", ROUND_TRIPS, ids=lambda v: v["type"] if isinstance(v, dict) else "")
def test_a_layer_exported_as_several_nodes_imports_as_itself(tmp_path, opset, layer, shape):
    """The import's subgraphs (docs/onnx.md) give back the one layer, with its options and parameters."""
    net = layer_net(layer, shape, "float32")
    export_onnx(net, tmp_path / "net.onnx", opset=opset)
    back = import_onnx(tmp_path / "net.onnx")
    assert [node.layer.type_name for node in back.nodes] == [layer["type"]]
    (entry,) = back.config["layers"]
    assert {key: entry.get(key) for key in layer if key != "type"} == {k: v for k, v in layer.items() if k != "type"}
    assert back.parameter_count() == net.parameter_count()
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    np.testing.assert_allclose(back.forward(x), net.forward(x), rtol=1e-5, atol=1e-6)
