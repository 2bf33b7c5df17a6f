"""ONNX export (issue 13): every layer type, option by option, and every example network, checked with
onnx.checker and run by onnx's reference evaluator against cnnrun's forward; batchnorm folded with
fuse; the dynamic batch axis; opsets; the errors; ``cnnrun export``."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from cnnrun.cli.main import cli
from cnnrun.engine import CnnrunError, Layer, Network, default_registry
from cnnrun.engine.network import read_network_file
from cnnrun.engine.checkpoint import Checkpoint, network_state, save_checkpoint
from cnnrun.engine.onnx import export_onnx
from cnnrun.engine.onnx.exporter import DEFAULT_OPSET, MIN_OPSET, opset_range

from helpers import narrowed

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/*.json")) + sorted(ROOT.glob("examples/zoo/*.json"))
ONNXRUNTIME = importlib.util.find_spec("onnxruntime") is not None  # a second runtime, where installed
SMALL_INPUT = {"vgg11_bn": [3, 32, 32], "googlenet": [3, 32, 32], "squeezenet1_1": [3, 48, 48]}


def randomized(net: Network, seed: int = 0) -> Network:
    """``net`` with random vectors (biases, scales, batchnorm statistics), so that no layer is an identity;
    the weights are random already (PyTorch's init)."""
    rng = np.random.default_rng(seed)
    for tree in (net.params, net.buffers):
        for arrays in tree.values():
            for key, array in arrays.items():
                if array.ndim == 1:
                    array[...] = rng.uniform(0.5, 1.5, array.shape) if key == "running_var" else \
                        rng.standard_normal(array.shape) * 0.5
    return net


class LRN(OpRun):
    """ONNX's LRN as its specification says: onnx.reference's (1.23) sums over the batch instead of the channels.

    square_sum[n, c] = sum of x[n, i]^2 for max(0, c - floor((size - 1) / 2)) <= i <= min(C - 1, c + ceil((size - 1)
    / 2)); y = x / (bias + alpha / size * square_sum) ** beta."""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        square_sum = np.zeros_like(x)
        for c in range(x.shape[1]):
            low, high = max(0, c - (size - 1) // 2), min(x.shape[1] - 1, c + size // 2)
            square_sum[:, c] = np.sum(x[:, low:high + 1] ** 2, axis=1)
        return (x / (bias + alpha / size * square_sum) ** beta,)


class ConvTranspose(OpRun):
    """onnx.reference's ConvTranspose one group at a time: its own (1.23) fails for group > 1."""

    def _run(self, x, w, b=None, auto_pad=None, dilations=None, group=None, kernel_shape=None, output_padding=None,
             output_shape=None, pads=None, strides=None):
        from onnx.reference.ops.op_conv_transpose import ConvTranspose as Reference

        group = group or 1
        options = dict(auto_pad=auto_pad, dilations=dilations, group=1, kernel_shape=kernel_shape,
                       output_padding=output_padding, output_shape=output_shape, pads=pads, strides=strides)
        biases = [None] * group if b is None else np.split(b, group)
        parts = [Reference._run(self, xg, wg, bg, **options)[0]
                 for xg, wg, bg in zip(np.split(x, group, 1), np.split(w, group), biases)]
        return (np.concatenate(parts, axis=1),)


REFERENCE_FIXES = [LRN, ConvTranspose]


def run_onnx(model, x: np.ndarray) -> np.ndarray:
    return ReferenceEvaluator(model, new_ops=REFERENCE_FIXES).run(None, {"input": x})[0]


def check_export(net: Network, tmp_path, batch: int = 2, rtol=1e-6, atol=1e-7, **options):
    """Export ``net``, check the model and compare the reference evaluator with ``net.forward`` (float64
    networks: within float32 rounding, the precision of ONNX's float attributes)."""
    path = tmp_path / f"{net.name}.onnx"
    model = export_onnx(net, path, **options)  # checked with onnx.checker (full_check) before it is written
    loaded = onnx.load(path)
    x = np.random.default_rng(1).standard_normal((batch, *net.input_shape)).astype(net.dtype)
    expected = net.forward(x, training=False)
    got = run_onnx(loaded, x)
    assert got.dtype == net.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol * max(1.0, np.abs(expected).max()))
    if ONNXRUNTIME and net.dtype == np.float32:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=max(rtol, 1e-5),
                                   atol=max(atol, 1e-6) * max(1.0, np.abs(expected).max()))
    return model


def layer_net(layer: dict, shape, dtype="float64") -> Network:
    return randomized(Network.from_config({"name": "one", "input": {"shape": list(shape)}, "layers": [layer]},
                                          dtype=dtype))


LAYERS = [  # (layer, input shape): every built-in type, and the options that change its ONNX nodes
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, (3, 7, 8)),
    ({"type": "conv2d", "out_channels": 4, "kernel_size": [3, 2], "stride": 2, "padding": "same", "dilation": [1, 2],
      "groups": 2, "bias": False}, (4, 9, 8)),
    ({"type": "conv2d", "out_channels": 2, "kernel_size": 2, "padding": "same_lower"}, (2, 5, 5)),
    ({"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": [1, 0, 2, 1]}, (2, 6, 6)),
    ({"type": "conv1d", "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1}, (2, 9)),
    ({"type": "conv_transpose2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1,
      "output_padding": 1, "groups": 2, "dilation": [1, 2]}, (2, 4, 5)),
    ({"type": "maxpool2d", "kernel_size": 3, "stride": 2, "ceil_mode": True}, (2, 8, 7)),
    ({"type": "maxpool2d", "kernel_size": 2, "padding": 1, "dilation": 2}, (2, 7, 7)),
    ({"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": "same"}, (2, 6, 7)),
    ({"type": "maxpool1d", "kernel_size": 2}, (3, 9)),
    ({"type": "avgpool2d", "kernel_size": 3, "stride": 2, "padding": 1}, (2, 7, 6)),
    ({"type": "avgpool2d", "kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False,
      "ceil_mode": True}, (2, 8, 8)),
    ({"type": "avgpool1d", "kernel_size": 3, "stride": 1, "padding": 1}, (2, 6)),
    ({"type": "global_avgpool"}, (3, 4, 5)),
    ({"type": "global_avgpool", "flatten": True}, (3, 6)),
    ({"type": "global_maxpool", "flatten": True}, (3, 4, 5)),
    ({"type": "adaptive_avgpool2d", "output_size": 2}, (2, 6, 4)),
    ({"type": "adaptive_avgpool2d", "output_size": [3, None]}, (2, 7, 5)),
    ({"type": "adaptive_maxpool2d", "output_size": [3, 2]}, (2, 5, 7)),
    ({"type": "upsample", "scale_factor": 2}, (2, 3, 4)),
    ({"type": "upsample", "size": [7, 5]}, (2, 3, 4)),
    ({"type": "upsample", "scale_factor": [1.5, 2], "mode": "bilinear"}, (2, 4, 3)),
    ({"type": "upsample", "size": [5, 9], "mode": "bilinear", "align_corners": True}, (2, 3, 4)),
    ({"type": "pad", "padding": [1, 2, 0, 3]}, (2, 3, 4)),
    ({"type": "pad", "padding": 1, "value": 2.5}, (2, 5)),
    ({"type": "pad", "padding": [2, 1], "mode": "reflect"}, (2, 4, 4)),
    ({"type": "pad", "padding": [1, 2, 3, 0], "mode": "replicate"}, (2, 3, 4)),
    ({"type": "pad", "padding": [1, 0, 3, 2], "mode": "circular"}, (2, 3, 4)),
    ({"type": "pixel_shuffle", "upscale_factor": 2}, (8, 3, 2)),
    ({"type": "pixel_unshuffle", "downscale_factor": 2}, (2, 4, 6)),
    ({"type": "channel_shuffle", "groups": 3}, (6, 2, 3)),
    ({"type": "linear", "out_features": 5}, (7,)),
    ({"type": "linear", "out_features": 3, "bias": False}, (4,)),
    ({"type": "flatten"}, (2, 3, 4)),
    ({"type": "flatten", "start_axis": 2}, (2, 3, 4)),
    ({"type": "reshape", "shape": [4, -1]}, (2, 3, 4)),
    ({"type": "identity"}, (3, 2)),
    ({"type": "slice", "start": 1, "stop": 7, "step": 2}, (8, 2, 2)),
    ({"type": "slice", "start": -3}, (5, 3)),
    ({"type": "permute", "dims": [0, 2, 3, 1]}, (2, 3, 4)),
    *(({"type": t}, (3, 4, 5)) for t in ("relu", "sigmoid", "tanh", "selu", "silu", "mish", "hardswish",
                                         "hardsigmoid", "relu6", "softsign", "hardtanh")),
    ({"type": "leaky_relu", "negative_slope": 0.2}, (3, 4)),
    ({"type": "elu", "alpha": 0.7}, (3, 4)),
    ({"type": "celu", "alpha": 1.5}, (3, 4)),
    ({"type": "gelu"}, (3, 4)),
    ({"type": "gelu", "approximate": "tanh"}, (3, 4)),
    ({"type": "clip", "min": -0.5}, (3, 4)),
    ({"type": "clip", "min": -0.5, "max": 0.25}, (3, 4)),
    ({"type": "hardtanh", "min_val": -0.3, "max_val": 0.6}, (3, 4)),
    ({"type": "softplus"}, (3, 4)),
    ({"type": "softplus", "beta": 2.0, "threshold": 1.0}, (3, 4)),
    ({"type": "softmax"}, (5,)),
    ({"type": "softmax", "axis": -1}, (3, 4, 5)),
    ({"type": "log_softmax", "axis": 1}, (3, 4, 5)),
    ({"type": "prelu", "num_parameters": 3}, (3, 4, 5)),
    ({"type": "prelu"}, (6,)),
    ({"type": "batchnorm"}, (3, 4, 5)),
    ({"type": "batchnorm", "affine": False}, (4,)),
    ({"type": "batchnorm", "track_running_stats": False}, (3, 4, 5)),
    ({"type": "layer_norm", "normalized_shape": [4, 5]}, (3, 4, 5)),
    ({"type": "layer_norm", "normalized_shape": 5, "elementwise_affine": False}, (3, 4, 5)),
    ({"type": "layer_norm", "normalized_shape": 3, "channels_first": True}, (3, 4, 5)),
    ({"type": "group_norm", "num_groups": 2}, (4, 3, 5)),
    ({"type": "instance_norm"}, (3, 4, 5)),
    ({"type": "instance_norm", "affine": True, "track_running_stats": True}, (3, 6)),
    ({"type": "lrn", "size": 3, "alpha": 0.1, "beta": 0.6, "k": 2.0}, (5, 3, 4)),
    ({"type": "lrn", "size": 4, "alpha": 0.1}, (5, 3, 4)),
    ({"type": "dropout", "p": 0.3}, (3, 4)),
    ({"type": "dropout2d"}, (3, 4, 5)),
    ({"type": "drop_path", "p": 0.2}, (3, 4, 5)),
    ({"type": "scale", "init": 0.5}, (3, 4, 5)),
]
MERGES = [("add", [(3, 4, 5), (3, 4, 5), (3, 1, 5)]), ("sub", [(3, 4, 5), (1, 4, 1)]),
          ("mul", [(3, 4, 5), (3, 1, 1)]), ("concat", [(2, 4, 5), (3, 4, 5)])]


def test_every_built_in_layer_type_is_tested():
    tested = {layer["type"] for layer, _ in LAYERS} | {name for name, _ in MERGES}
    assert tested == set(default_registry().classes)


FLOAT32_ONLY = {"celu"}  # ONNX's Celu takes float32 tensors only


@pytest.mark.parametrize("layer, shape", LAYERS, ids=lambda v: v["type"] if isinstance(v, dict) else "")
def test_a_layer_exports_to_what_it_computes(tmp_path, layer, shape):
    if layer["type"] not in FLOAT32_ONLY:
        check_export(layer_net(layer, shape), tmp_path)
    check_export(layer_net(layer, shape, "float32"), tmp_path, rtol=1e-5, atol=1e-6)  # onnxruntime's too


@pytest.mark.parametrize("opset", [MIN_OPSET, 18, 20, opset_range()[1]])
@pytest.mark.parametrize("layer, shape", [
    ({"type": "gelu"}, (3, 4)), ({"type": "gelu", "approximate": "tanh"}, (3, 4)), ({"type": "mish"}, (3, 4)),
    ({"type": "hardswish"}, (3, 4)), ({"type": "layer_norm", "normalized_shape": [4]}, (3, 4)),
    ({"type": "upsample", "size": [5, 6], "mode": "bilinear"}, (2, 3, 4)),
    ({"type": "adaptive_maxpool2d", "output_size": 3}, (2, 5, 4)),
])
def test_layers_whose_nodes_depend_on_the_opset(tmp_path, opset, layer, shape):
    model = check_export(layer_net(layer, shape), tmp_path, opset=opset)
    assert model.opset_import[0].version == opset


@pytest.mark.parametrize("name, shapes", MERGES)
def test_a_merge_layer_exports_with_broadcasting(tmp_path, name, shapes):
    layers = [{"type": "conv2d", "name": f"c{i}", "out_channels": s[0], "kernel_size": [7 - s[1], 7 - s[2]],
               "inputs": "input"} for i, s in enumerate(shapes)]  # (3, 6, 6) inputs to the merged shapes
    config = {"input": {"shape": [3, 6, 6]}, "layers": [*layers, {"type": name, "inputs": [f"c{i}" for i in
                                                                                          range(len(shapes))]}]}
    check_export(randomized(Network.from_config(config, dtype="float64")), tmp_path)


def example(path: Path) -> Network:
    config = read_network_file(path)
    config["input"]["shape"] = SMALL_INPUT.get(path.stem, config["input"]["shape"][:1] + [32, 32]
                                               if path.parent.name == "zoo" else config["input"]["shape"])
    return randomized(Network.from_config(narrowed(config)))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_network_exports_and_runs_the_same(tmp_path, path):
    model = check_export(example(path), tmp_path, batch=1, rtol=2e-4, atol=2e-5)
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim[:1]] == ["N"]


@pytest.mark.parametrize("last", ["dropout", "identity"])
def test_a_network_may_end_in_a_layer_that_passes_its_input_on(tmp_path, last):
    config = {"input": {"shape": [5]}, "layers": [{"type": "linear", "out_features": 3}, {"type": last}]}
    model = check_export(Network.from_config(config, dtype="float64"), tmp_path)
    assert [(n.op_type, list(n.output)) for n in model.graph.node] == [("Gemm", ["linear_1"]),
                                                                      ("Identity", ["output"])]


def test_initializers_are_the_parameters_in_pytorch_layouts(tmp_path):
    net = example(ROOT / "examples/resnet_block.json")
    model = export_onnx(net, tmp_path / "m.onnx")
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    expected = {f"{layer}.{key}": a for tree in (net.params, net.buffers) for layer, arrays in tree.items()
                for key, a in arrays.items()}
    assert expected.keys() <= stored.keys()
    for name, array in expected.items():
        np.testing.assert_array_equal(stored[name], array)
    assert {n.op_type for n in model.graph.node} >= {"Conv", "BatchNormalization", "Gemm", "Add", "Concat"}


def test_fuse_folds_batchnorm_into_the_conv_before_it(tmp_path):
    net = example(ROOT / "examples/small_digits.json")
    plain = check_export(net, tmp_path, rtol=1e-5, atol=1e-5)
    model = check_export(net, tmp_path, rtol=1e-5, atol=1e-5, fuse=True)
    count = lambda m, op: sum(n.op_type == op for n in m.graph.node)
    assert count(plain, "BatchNormalization") == 3 and count(model, "BatchNormalization") == 0
    assert count(model, "Conv") == count(plain, "Conv") == 3
    assert all(len(n.input) == 3 for n in model.graph.node if n.op_type == "Conv")  # each has a bias now


def test_the_batch_axis_is_dynamic(tmp_path):
    net = example(ROOT / "examples/resnet_block.json")
    export_onnx(net, tmp_path / "m.onnx")
    session = ReferenceEvaluator(str(tmp_path / "m.onnx"), new_ops=REFERENCE_FIXES)
    x = np.random.default_rng(0).standard_normal((3, *net.input_shape)).astype(np.float32)
    for batch in (1, 3):
        got = session.run(None, {"input": x[:batch]})[0]
        np.testing.assert_allclose(got, net.forward(x[:batch]), rtol=1e-5, atol=1e-6)


def test_opset_default_range_and_errors(tmp_path):
    low, high = opset_range()
    assert (low, DEFAULT_OPSET) == (13, 17) and high >= 19
    net = layer_net({"type": "relu"}, (3,))
    assert export_onnx(net, tmp_path / "m.onnx").opset_import[0].version == 17
    for bad in (12, high + 1, "17"):
        with pytest.raises(CnnrunError, match=rf"opset must be an integer from 13 to {high} .*got opset="):
            export_onnx(net, tmp_path / "m.onnx", opset=bad)


class Cube(Layer):
    """y = x^3, with no ONNX export."""

    type_name = "cube"

    def forward(self, ctx, x):
        return x ** 3


class Future(Cube):
    """A layer whose ONNX nodes need a newer opset than any."""

    type_name = "future"

    def to_onnx(self, graph, x):
        graph.require(999, "the Future operator")
        return graph.op("Future", x)


class Broken(Cube):
    """A layer whose ONNX node is no operator."""

    type_name = "broken"

    def to_onnx(self, graph, x):
        return graph.op("NoSuchOperator", x)


class CubeOnnx(Cube):
    """A plugin layer exporting through to_onnx."""

    type_name = "cube_onnx"

    def to_onnx(self, graph, x):
        return graph.op("Pow", x, graph.scalar(3.0))


@pytest.fixture
def plugin_registry(registry):
    for layer in (Cube, Future, Broken, CubeOnnx):
        registry.register(layer, "cnnrun-test")
    return registry


def plugin_net(registry, *types) -> Network:
    layers = [{"type": "linear", "out_features": 3}] + [{"type": t} for t in types]
    return Network.from_config({"name": "p", "input": {"shape": [4]}, "layers": layers}, registry=registry)


def test_a_plugin_layer_exports_through_its_to_onnx(tmp_path, plugin_registry):
    model = check_export(plugin_net(plugin_registry, "cube_onnx"), tmp_path, rtol=1e-5, atol=1e-6)
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Pow"]
    assert model.graph.node[-1].name == "cube_onnx_1/Pow" and model.graph.output[0].name == "output"


def test_a_layer_without_to_onnx_is_an_error_naming_it(tmp_path, plugin_registry):
    with pytest.raises(CnnrunError, match=r"network 'p': no ONNX export for layer\(s\) 'cube_1' \(cube\), "
                                          r"'cube_2' \(cube\): the layer type has no to_onnx method"):
        export_onnx(plugin_net(plugin_registry, "cube", "relu", "cube"), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_layer_needing_a_newer_opset_is_an_error_naming_it(tmp_path, plugin_registry):
    with pytest.raises(CnnrunError, match=r"layer 'future_1' \(future\): the Future operator needs ONNX opset "
                                          r"999 or later; got opset 17"):
        export_onnx(plugin_net(plugin_registry, "future"), tmp_path / "m.onnx")


def test_the_model_is_checked_before_it_is_written(tmp_path, plugin_registry):
    with pytest.raises(CnnrunError, match=r"network 'p': the exported graph is not valid ONNX: .*NoSuchOperator"):
        export_onnx(plugin_net(plugin_registry, "broken"), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_fuse_works_with_plugin_layers(tmp_path, plugin_registry):
    net = plugin_net(plugin_registry, "batchnorm", "cube_onnx")
    randomized(net)
    model = check_export(net, tmp_path, rtol=1e-5, atol=1e-5, fuse=True)
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Pow"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """examples/small_digits.json with a checkpoint of random weights and its normalization."""
    folder = tmp_path_factory.mktemp("run")
    net = example(ROOT / "examples/small_digits.json")
    params, buffers = network_state(net)
    meta = {"normalization": {"mean": [0.5], "std": [0.25]}, "class_names": [str(i) for i in range(10)]}
    save_checkpoint(folder / "best.npz", Checkpoint(params, buffers, {}, meta))
    return net, folder


def test_cli_export_writes_the_model(tmp_path, trained):
    net, folder = trained
    out = tmp_path / "digits.onnx"
    result = CliRunner().invoke(cli, ["export", str(ROOT / "examples/small_digits.json"), "--checkpoint", str(folder),
                                      "--out", str(out), "--opset", "15", "--fuse"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"checkpoint {folder / 'best.npz'}", "folded 3 batchnorm layers",
                                          f"wrote {out} (opset 15, input 'input' (N, 1, 8, 8), output "
                                          f"'output' (N, 10))"]
    model = onnx.load(out)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(model, x), net.forward(x), rtol=1e-5, atol=1e-6)
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["normalization"] == {"mean": [0.5], "std": [0.25]} and len(props["class_names"]) == 10


@pytest.mark.parametrize("arguments, message", [
    (["--opset", "9"], "opset must be an integer from 13 to"),
    (["--checkpoint", "{ROOT}/examples/lenet5.json"], "lenet5.json: not an .npz file"),
])
def test_cli_export_errors_are_one_line(tmp_path, trained, arguments, message):
    _, folder = trained
    arguments = [a.replace("{ROOT}", str(ROOT)) for a in arguments]
    base = ["export", str(ROOT / "examples/small_digits.json"), "--out", str(tmp_path / "m.onnx")]
    if "--checkpoint" not in arguments:
        base += ["--checkpoint", str(folder)]
    result = CliRunner().invoke(cli, base + arguments)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_export_without_onnx_says_what_to_install(tmp_path, trained, monkeypatch):
    _, folder = trained
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    result = CliRunner().invoke(cli, ["export", str(ROOT / "examples/small_digits.json"), "--checkpoint",
                                      str(folder), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: ONNX export needs the onnx package: pip install 'cnnrun[onnx]'"
