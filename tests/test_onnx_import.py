"""ONNX import (docs/onnx.md): every supported operator and attribute combination, as a small graph
built with onnx.helper, gives cnnrun's forward the output of onnx's reference evaluator; an imported
model fine-tunes from train.init; unsupported operators are one line each; ``cnnrun import``."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import helper
from onnx.reference import ReferenceEvaluator

from onnx_graphs import CASES, i64, make_model, node, w
from cnnrun.cli.main import cli
from cnnrun.engine import CnnrunError
from cnnrun.engine.checkpoint import load_checkpoint
from cnnrun.engine.onnx import import_onnx
from cnnrun.engine.onnx.importer import onnx_to_cnnrun
from cnnrun.engine.train import train


def reference(model, x):
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("name", list(CASES))
def test_operator_matches_the_reference_evaluator(name, registry):
    shape, opset, nodes, inits = CASES[name]
    model = make_model(shape, opset, nodes, inits)
    net = import_onnx(model, registry=registry)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    expected = reference(model, x)
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-4, atol=1e-5)


def layer_types(name, registry):
    shape, opset, nodes, inits = CASES[name]
    config, _ = onnx_to_cnnrun(make_model(shape, opset, nodes, inits), registry=registry)
    return [entry["type"] for entry in config["layers"]]


@pytest.mark.parametrize("name, types", [
    ("gelu_pattern", ["gelu"]), ("silu_pattern", ["silu"]), ("hardswish_pattern", ["hardswish"]),
    ("channel_shuffle", ["channel_shuffle"]), ("reshape_view", ["flatten"]), ("conv_add_folded", ["conv2d"]),
    ("matmul_add", ["linear"]), ("dropout_identity", ["relu"]), ("concat_single", ["relu"]), ("clip_relu6", ["relu6"]),
    ("transpose_kept", ["relu", "permute"]),
    ("layer_norm_decomposed", ["layer_norm"]),
    ("convnext_block", ["layer_norm", "conv2d", "gelu", "conv2d", "scale", "add"]),
])
def test_patterns_become_single_layers(name, types, registry):
    assert layer_types(name, registry) == types


def test_convnext_block_uses_channels_first_layers(registry):
    shape, opset, nodes, inits = CASES["convnext_block"]
    config, checkpoint = onnx_to_cnnrun(make_model(shape, opset, nodes, inits), registry=registry)
    norm, fc1, _, fc2, scale, add = config["layers"]
    assert norm["channels_first"] is True and fc1["kernel_size"] == 1 and fc2.get("bias", True)
    assert checkpoint.params[scale["name"]]["weight"].shape == (4,)
    assert add["inputs"] == [scale["name"], "input"]


def test_static_batch_and_default_stride_of_pools(registry):
    model = make_model((1, 2, 5, 5), 13, [node("MaxPool", "x", kernel_shape=[2, 2])], {}, dynamic_batch=False)
    net = import_onnx(model, registry=registry)
    assert net.config["layers"][0]["stride"] == 1  # ONNX's default stride is 1, cnnrun's the kernel
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x)[:1], reference(model, x[:1]), rtol=1e-6)


def classifier(opset=15):
    """A small model ending in logits: conv, batchnorm, relu, pool, flatten, gemm (opset 15: onnx's reference
    runs BatchNormalization 9 to 13 with batch statistics)."""
    inits = {"W": w(4, 1, 3, 3), "s": w(4), "b": w(4), "m": w(4), "v": w(4, positive=True), "F": w(3, 16), "C": w(3)}
    nodes = [node("Conv", "xW", ["c"], pads=[1, 1, 1, 1]), node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
             node("Relu", "n", ["r"]), node("MaxPool", "r", ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             node("Flatten", "p", ["f"]), node("Gemm", "fFC", transB=1)]
    return make_model((2, 1, 4, 4), opset, nodes, inits)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "data.npz"
    np.savez(path, x=rng.standard_normal((24, 1, 4, 4)).astype(np.float32), y=rng.integers(0, 3, 24))
    return path


def test_fine_tuning_starts_from_the_imported_weights(tmp_path, data_file, registries):
    config, checkpoint = onnx_to_cnnrun(classifier(), registry=registries.layers)
    from cnnrun.engine.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "weights.npz", checkpoint)
    config["train"] = {"data": {"type": "npz", "path": str(data_file)}, "epochs": 2, "batch_size": 8,
                       "validation_split": 0.0,
                       "init": "weights.npz", "optimizer": {"type": "sgd", "lr": 1e-30}}
    (tmp_path / "net.json").write_text(json.dumps(config))
    frozen = train(tmp_path / "net.json", out=tmp_path / "frozen", registries=registries)
    for layer, named in checkpoint.params.items():
        for key, value in named.items():
            np.testing.assert_array_equal(frozen.network.params[layer][key], value)
    tuned = train(tmp_path / "net.json", overrides={"optimizer.lr": 0.1}, out=tmp_path / "tuned",
                  registries=registries)
    assert tuned.metrics[-1]["train_loss"] < frozen.metrics[-1]["train_loss"]
    changed = tuned.network.params["m.Gemm_y"]["weight"] - checkpoint.params["m.Gemm_y"]["weight"]
    assert np.abs(changed).max() > 0 and load_checkpoint(tuned.run_dir / "latest.npz").meta["optimizer"]["step"] == 6


def test_train_init_must_be_a_path(tmp_path, registries):
    config, _ = onnx_to_cnnrun(classifier(), registry=registries.layers)
    config["train"] = {"init": 3}
    with pytest.raises(CnnrunError, match="train: init must be the path of a checkpoint"):
        train(config, out=tmp_path / "run", registries=registries)


def test_unsupported_operators_are_one_line_each(registry):
    nodes = [node("Relu", "x", ["r"]), node("Einsum", ["r"], ["e1"], equation="nchw->nchw"),
             node("Einsum", ["e1"], ["e2"], equation="nchw->nchw"), node("Round", "e2", ["q"]), node("Relu", "q")]
    with pytest.raises(CnnrunError) as caught:
        import_onnx(make_model((1, 2, 3, 3), 13, nodes, {}), registry=registry)
    lines = str(caught.value).splitlines()
    assert lines[0] == ("the model: operator Einsum is not supported (nodes: '/m/Einsum_e1' (Einsum), "
                        "'/m/Einsum_e2' (Einsum))")
    assert lines[1] == "the model: operator Round is not supported (nodes: '/m/Round_q' (Round))"
    assert lines[2].startswith("supported: Add, AveragePool, BatchNormalization,") and "folded: Constant" in lines[2]


@pytest.mark.parametrize("nodes, inits, message", [
    ([node("LRN", "x", size=2)], {}, r"an even size \(2\) .*supported: odd sizes"),
    ([node("Resize", ["x", "", "s"], mode="cubic")], {"s": np.array([1, 1, 2, 2], np.float32)},
     "mode cubic with coordinate_transformation_mode half_pixel .* not supported; supported: nearest"),
    ([node("Transpose", "x", ["t"], perm=[1, 0, 2, 3]), node("Relu", "t")], {}, "moves the batch axis"),
    ([node("Concat", ["x", "x"], axis=2)], {}, "along axis 2 is not supported; supported: the channel axis"),
    ([node("HardSigmoid", "x")], {}, r"alpha=0.2, beta=0.5 are not supported; supported: alpha 1/6"),
    ([node("Add", ["x", "c"])], {"c": w(1, 2, 3, 3)}, r"a constant of shape \(1, 2, 3, 3\) .* not supported"),
    ([node("Mul", ["x", "x"], ["m"]), node("Div", ["x", "m"])], {}, "dividing by a computed tensor"),
    ([node("MatMul", ["x", "x"])], {}, "B .* must be a constant"),
    ([node("DepthToSpace", "x", blocksize=1)], {}, "mode DCR is not supported; supported: CRD"),
    ([node("MaxPool", "x", ["y", "i"], kernel_shape=[2, 2]), node("Relu", "i", ["z"]), node("Add", ["y", "z"])], {},
     "its Indices output is not supported"),
    ([node("BatchNormalization", "xsbmv", training_mode=1)], {k: w(2) for k in "sbmv"}, "training mode"),
    ([node("AveragePool", "x", kernel_shape=[2, 2], dilations=[2, 2])], {}, r"dilations \[2, 2\] are not supported"),
    ([node("ConvTranspose", "xW", pads=[0, 0, 1, 1])], {"W": w(2, 2, 2, 2)}, "pads must be the same before and after"),
    ([node("Selu", "x", alpha=2.0)], {}, "supported: the SELU constants"),
    ([node("Flatten", "x", ["f"]), node("ConvTranspose", "fW")], {"W": w(18, 1, 1)}, r"needs a 2-D \(N, C, H, W\) input;"),
    ([node("Flatten", "x", axis=2)], {}, "axis 2 joins the batch axis with others"),
    ([node("Reshape", ["x", "s"])], {"s": i64(2, 9)}, r"a reshape of \(1, 2, 3, 3\) to \(2, 9\)"),
    ([node("Split", "x", ["a", "b"], axis=2, num_outputs=2), node("Add", ["a", "b"])], {}, "splitting along axis 2"),
    ([node("Slice", ["x", "s", "e", "a"])], {"s": i64(0, 1), "e": i64(1, 2), "a": i64(1, 2)}, "one slice of the channel"),
    ([node("Pad", ["x", "p"])], {"p": i64(0, 1, 0, 0, 0, 0, 0, 0)}, "none of the batch and channels"),
    ([node("Resize", ["x", "", "s"], mode="linear")], {"s": np.array([1, 2, 1, 1], np.float32)}, "change the batch"),
    ([node("ReduceMean", "x", axes=[1])], {}, r"reducing axes \[1\] of a rank-4 input"),
    ([node("Softmax", "x", axis=1)], {}, "before opset 13 a Softmax over axis 1"),
    ([node("Gemm", "xBC", transA=1)], {"B": w(2, 2), "C": w(2)}, "without transA"),
    ([node("LayerNormalization", "xs", axis=0)], {"s": w(1, 2, 3, 3)}, "over the batch axis"),
])
def test_unexpressible_attributes_name_the_node(nodes, inits, message, registry):
    opset = {"Softmax": 11, "ReduceMean": 13}.get(nodes[0].op_type, 18)
    with pytest.raises(CnnrunError, match=r"^the model: node '/m/\w+' \(\w+\): .*" + message):
        import_onnx(make_model((1, 2, 3, 3), opset, nodes, inits), registry=registry)


NORMALIZE_CH_H = [node("ReduceMean", "x", ["m"], axes=[1, 2]), node("Sub", "xm", ["c"]), node("Mul", "cc", ["q"]),
                  node("ReduceMean", "q", ["v"], axes=[1, 2]), node("Add", "ve", ["a"]), node("Sqrt", "a", ["r"]),
                  node("Div", "cr")]
UNEVEN_BINS = [node("Slice", ["x", f"s{i}", f"e{i}", "h"], [f"b{i}"]) for i in range(2)] + \
    [node("ReduceMean", [f"b{i}", "h"], [f"r{i}"]) for i in range(2)] + [node("Concat", ["r0", "r1"], axis=2)]


@pytest.mark.parametrize("nodes, inits, message", [
    (NORMALIZE_CH_H, {"e": np.float32(1e-5)}, r"normalizing over axes \[1, 2\] of a rank-4 input is not supported"),
    (UNEVEN_BINS, {"h": i64(2), "s0": i64(0), "e0": i64(1), "s1": i64(1), "e1": i64(2)},
     "slices of 2 positions along axis 2 of an input of shape \\(1, 2, 3, 3\\) are not the bins of adaptive pooling"),
    ([node("Slice", ["x", "s", "e", "h"], ["b"]), node("Concat", ["b", "x"], axis=2)],
     {"h": i64(2), "s": i64(1), "e": i64(2)}, r"the positions 1:2 and 0:0 around axis 2 .* are not a circular padding"),
])
def test_a_pattern_cnnrun_cannot_express_names_a_node_of_it(nodes, inits, message, registry):
    with pytest.raises(CnnrunError, match=rf"^the model: node '/m/\w+' \(cnnrun\.\w+\): {message}"):
        import_onnx(make_model((1, 2, 3, 3), 13 if nodes is NORMALIZE_CH_H else 18, nodes, inits), registry=registry)


def test_bad_files(tmp_path, registry):
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(CnnrunError, match=r"bad.onnx: not an ONNX model"):
        import_onnx(tmp_path / "bad.onnx", registry=registry)
    model = make_model((1, 2, 3, 3), 13, [node("Relu", "x")], {})
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(CnnrunError, match=r"give the static shape \(--input-shape C,H,W\)"):
        import_onnx(model, registry=registry)
    assert import_onnx(model, input_shape=(2, 5, 5), registry=registry).input_shape == (2, 5, 5)


def test_cli_import_writes_a_network_that_describe_and_eval_take(tmp_path, data_file):
    import onnx
    model = classifier()
    onnx.save(model, tmp_path / "small.onnx")
    runner = CliRunner()
    result = runner.invoke(cli, ["import", str(tmp_path / "small.onnx"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "imported 6 layers" in result.output
    net_file, weights = tmp_path / "out" / "small.json", tmp_path / "out" / "weights.npz"
    described = runner.invoke(cli, ["describe", str(net_file), "--format", "json"])
    assert described.exit_code == 0 and json.loads(described.output)["total_params"] == 4 * 9 + 8 + 48 + 3
    evaluated = runner.invoke(cli, ["eval", str(net_file), "--checkpoint", str(weights), "--data", str(data_file),
                                    "--format", "json"])
    assert evaluated.exit_code == 0, evaluated.output
    x, y = np.load(data_file)["x"], np.load(data_file)["y"]
    expected = (reference(model, x).argmax(1) == y).mean()
    assert json.loads(evaluated.output)["accuracy"] == pytest.approx(expected)
    tuned = runner.invoke(cli, ["train", str(net_file), "--init", str(weights), "--epochs", "1", "--out",
                                str(tmp_path / "run"), "--set", f'data={{"type": "npz", "path": "{data_file}"}}', "-q"])
    assert tuned.exit_code == 0, tuned.output


def test_cli_import_errors(tmp_path, monkeypatch):
    (tmp_path / "bad.onnx").write_text("not a model")
    result = CliRunner().invoke(cli, ["import", str(tmp_path / "bad.onnx"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and len(result.output.splitlines()) == 1
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    result = CliRunner().invoke(cli, ["import", str(tmp_path / "bad.onnx"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "pip install 'cnnrun[onnx]'" in result.output


def test_upsample7_and_resize10(registry):
    """onnx's reference evaluator cannot run Upsample-7 (scales as an attribute) nor Resize-10 (scales as
    input 2): compared with Upsample-9, which it can (onnxruntime gives the same for Resize-10)."""
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 4)).astype(np.float32)
    scales = {"s": np.array([1, 1, 2, 3], np.float32)}
    expected = reference(make_model(x.shape, 9, [node("Upsample", ["x", "s"])], scales), x)
    for model in (make_model(x.shape, 7, [node("Upsample", "x", scales=[1.0, 1.0, 2.0, 3.0])], {}),
                  make_model(x.shape, 10, [node("Resize", ["x", "s"])], scales)):
        np.testing.assert_array_equal(import_onnx(model, registry=registry).forward(x), expected)
    shrink = make_model(x.shape, 10, [node("Resize", ["x", "s"])], {"s": np.array([1, 1, 0.5, 1], np.float32)})
    with pytest.raises(CnnrunError, match="before opset 11 nearest shrinks by rounding up"):
        import_onnx(shrink, registry=registry)


def residual_stage(second_stride=1):
    """Two residual units named as PyTorch names them (/layer1/layer1.0/conv/Conv, ...), then a head."""
    nodes, inits, source = [], {}, "x"
    for k, stride in enumerate((1, second_stride)):
        unit = f"/layer1/layer1.{k}"
        inits[f"W{k}"] = w(4, 4, 3, 3)
        nodes += [helper.make_node("Conv", [source, f"W{k}"], [f"c{k}"], name=f"{unit}/conv/Conv", pads=[1, 1, 1, 1],
                                   strides=[stride, stride]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"{unit}/Relu")]
        if stride == 1:
            nodes.append(helper.make_node("Add", [f"r{k}", source], [f"a{k}"], name=f"{unit}/Add"))
        source = nodes[-1].output[0]
    nodes.append(helper.make_node("GlobalAveragePool", [source], ["y"], name="/pool/GlobalAveragePool"))
    return make_model((2, 4, 6, 6), 13, nodes, inits)


def test_repeated_units_become_a_block_with_the_same_layer_names(registry):
    model = residual_stage()
    config, checkpoint = onnx_to_cnnrun(model, registry=registry)
    assert config["blocks"] == {"layer1": {"layers": [
        {"name": "conv.Conv", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False},
        {"name": "Relu", "type": "relu"}, {"name": "Add", "type": "add", "inputs": ["Relu", "$in"]}]}}
    assert config["layers"][0] == {"block": "layer1", "name": "layer1", "start": 0, "repeat": 2}
    net = import_onnx(model, registry=registry)
    assert [node.name for node in net.nodes][:3] == ["layer1.0.conv.Conv", "layer1.0.Relu", "layer1.0.Add"]
    assert set(checkpoint.params) == {"layer1.0.conv.Conv", "layer1.1.conv.Conv"}
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x), reference(model, x), rtol=1e-5, atol=1e-6)
    assert "blocks" not in onnx_to_cnnrun(residual_stage(second_stride=2), registry=registry)[0]
