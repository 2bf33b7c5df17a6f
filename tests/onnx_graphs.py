"""Small ONNX graphs built with onnx.helper, one per supported operator and attribute combination,
for tests/test_onnx_import.py: ``CASES[id] = (input shape with batch, opset, nodes, initializers)``;
the graph reads ``x`` and writes ``y``."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

R = np.random.default_rng(7)


def w(*shape, positive=False):
    a = R.standard_normal(shape).astype(np.float32)
    return np.abs(a) + 0.5 if positive else a


def i64(*values):
    return np.array(values, np.int64)


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name=f"/m/{op}_{outputs[0]}", **attrs)


def make_model(input_shape, opset, nodes, inits, dynamic_batch=True):
    shape = [None if dynamic_batch else input_shape[0], *input_shape[1:]]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


IMG = (2, 4, 6, 6)
CASES = {}


def case(name, input_shape, opset, nodes, inits=None):
    CASES[name] = (input_shape, opset, nodes, inits or {})


# convolutions
conv_w = {"W": w(6, 4, 3, 3), "B": w(6)}
case("conv_pads", IMG, 13, [node("Conv", "xWB", pads=[1, 1, 1, 1])], conv_w)
case("conv_per_side_stride", IMG, 11, [node("Conv", "xWB", pads=[0, 1, 2, 1], strides=[2, 1])], conv_w)
case("conv_same_upper", IMG, 17, [node("Conv", "xW", auto_pad="SAME_UPPER", strides=[2, 2])], conv_w)
case("conv_same_lower", IMG, 7, [node("Conv", "xWB", auto_pad="SAME_LOWER", strides=[2, 2])], conv_w)
case("conv_valid_dilated", IMG, 13, [node("Conv", "xWB", auto_pad="VALID", dilations=[2, 1])], conv_w)
case("conv_groups", IMG, 13, [node("Conv", "xWB", group=2, kernel_shape=[3, 3])], {"W": w(6, 2, 3, 3), "B": w(6)})
case("conv1d", (2, 4, 9), 13, [node("Conv", "xWB", pads=[2, 1], strides=[2])], {"W": w(5, 4, 3), "B": w(5)})
case("conv_transpose", IMG, 13, [node("ConvTranspose", "xWB", strides=[2, 2], pads=[1, 1, 1, 1],
                                      output_padding=[1, 0])], {"W": w(4, 3, 3, 3), "B": w(3)})
case("conv_transpose_dilated", IMG, 9, [node("ConvTranspose", "xW", dilations=[2, 2])], {"W": w(4, 3, 2, 2)})
# pooling
case("maxpool_pads", IMG, 13, [node("MaxPool", "x", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])])
case("maxpool_ceil_dilated", IMG, 12, [node("MaxPool", "x", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1,
                                            dilations=[2, 1])])
case("maxpool_same_upper", IMG, 8, [node("MaxPool", "x", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")])
case("maxpool_per_side", IMG, 13, [node("MaxPool", "x", kernel_shape=[2, 3], pads=[0, 1, 1, 0])])
case("maxpool1d", (2, 3, 9), 13, [node("MaxPool", "x", kernel_shape=[3], strides=[2], pads=[1, 1])])
case("avgpool_exclude_pad", IMG, 13, [node("AveragePool", "x", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])])
case("avgpool_include_pad_ceil", IMG, 19, [node("AveragePool", "x", kernel_shape=[3, 3], strides=[2, 2],
                                               pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1)])
case("avgpool_valid", IMG, 11, [node("AveragePool", "x", kernel_shape=[2, 2], auto_pad="VALID")])
case("avgpool_same_lower", IMG, 13, [node("AveragePool", "x", kernel_shape=[3, 3], auto_pad="SAME_LOWER",
                                          strides=[2, 2], count_include_pad=1)])
case("global_avgpool", IMG, 13, [node("GlobalAveragePool", "x")])
case("global_maxpool", IMG, 13, [node("GlobalMaxPool", "x")])
# normalization (onnx's reference LRN loops over range(N) for the channels: N >= C is needed)
bn = {"s": w(4), "b": w(4), "m": w(4), "v": w(4, positive=True)}
case("batchnorm", IMG, 15, [node("BatchNormalization", "xsbmv", epsilon=1e-3, momentum=0.8)], bn)
case("batchnorm_defaults", IMG, 14, [node("BatchNormalization", "xsbmv")], bn)  # the reference trains in 7 to 13
case("lrn", (3, 3, 4, 4), 13, [node("LRN", "x", size=3, alpha=0.2, beta=0.6, bias=1.5)])
case("layer_norm_last_axes", IMG, 17, [node("LayerNormalization", "xsb", axis=2, epsilon=1e-4)],
     {"s": w(6, 6), "b": w(6, 6)})
case("group_norm_channels", IMG, 21, [node("GroupNormalization", "xsb", num_groups=2, epsilon=1e-3)],
     {"s": w(4), "b": w(4)})
case("group_norm_groups", IMG, 18, [node("GroupNormalization", "xsb", num_groups=2)], {"s": w(2), "b": w(2)})
case("instance_norm", IMG, 13, [node("InstanceNormalization", "xsb")], {"s": w(4), "b": w(4)})
# activations
for op, attrs, opset in [("Relu", {}, 13), ("Sigmoid", {}, 13), ("Tanh", {}, 13), ("Softsign", {}, 13),
                         ("LeakyRelu", {"alpha": 0.2}, 13), ("Elu", {"alpha": 0.7}, 13), ("Celu", {"alpha": 1.3}, 13),
                         ("Selu", {}, 13), ("Softplus", {}, 13), ("HardSigmoid", {"alpha": 1 / 6}, 13),
                         ("HardSwish", {}, 14), ("Mish", {}, 18), ("Gelu", {}, 20),
                         ("Gelu", {"approximate": "tanh"}, 20), ("Clip", {"min": -0.5, "max": 0.7}, 9)]:
    case(f"{op.lower()}{'_' + '_'.join(map(str, attrs.values())) if attrs else ''}".replace(".", ""), IMG, opset,
         [node(op, "x", **attrs)])
case("clip_relu6", IMG, 13, [node("Clip", ["x", "lo", "hi"])], {"lo": np.array(0, np.float32),
                                                                 "hi": np.array(6, np.float32)})
case("clip_inputs", IMG, 13, [node("Clip", ["x", "lo", ""])], {"lo": np.array(-0.3, np.float32)})
case("prelu_channels", IMG, 13, [node("PRelu", "xs")], {"s": w(4, 1, 1)})
case("prelu_scalar", IMG, 9, [node("PRelu", "xs")], {"s": np.array([0.3], np.float32)})
case("softmax_features", (2, 7), 11, [node("Softmax", "x", axis=1)])
case("softmax_channels", IMG, 13, [node("Softmax", "x", axis=1)])
case("log_softmax", (2, 7), 13, [node("LogSoftmax", "x")])
gelu_half = {"r2": np.array(1.4142135, np.float32), "one": np.array(1.0, np.float32), "h": np.array(0.5, np.float32)}
case("gelu_pattern", IMG, 13, [node("Div", ["x", "r2"], ["d"]), node("Erf", "d", ["e"]),
                               node("Add", ["e", "one"], ["a"]), node("Mul", ["x", "a"], ["m"]), node("Mul", ["m", "h"])],
     gelu_half)
case("silu_pattern", IMG, 13, [node("Sigmoid", "x", ["s"]), node("Mul", ["x", "s"])])
case("hardswish_pattern", IMG, 13, [node("HardSigmoid", "x", ["s"], alpha=1 / 6), node("Mul", ["s", "x"])])
# linear layers
case("gemm_transb", (2, 5), 13, [node("Gemm", "xBC", transB=1, alpha=0.5, beta=2.0)], {"B": w(3, 5), "C": w(3)})
case("gemm_row_bias", (2, 5), 7, [node("Gemm", "xBC")], {"B": w(5, 3), "C": w(1, 3)})
case("matmul_add", (2, 5), 13, [node("MatMul", "xB", ["m"]), node("Add", ["m", "C"])], {"B": w(5, 3), "C": w(3)})
# shapes: flatten, reshape from a folded shape subgraph (torch's x.view(x.size(0), -1))
case("flatten", IMG, 13, [node("Flatten", "x")])
case("reshape_view", IMG, 13, [node("Shape", "x", ["s"]), node("Gather", ["s", "zero"], ["n"], axis=0),
                               node("Unsqueeze", ["n", "zeros"], ["n1"]), node("Concat", ["n1", "minus"], ["t"], axis=0),
                               node("Reshape", ["x", "t"])],
     {"zero": np.array(0, np.int64), "zeros": i64(0), "minus": i64(-1)})
case("reshape_constant", IMG, 9, [node("Constant", [], ["t"], value=numpy_helper.from_array(i64(0, 4, 36))),
                                  node("Reshape", ["x", "t"])])
case("squeeze_unsqueeze", IMG, 11, [node("GlobalAveragePool", "x", ["g"]), node("Squeeze", ["g"], ["q"], axes=[2, 3]),
                                    node("Unsqueeze", ["q"], ["y"], axes=[2])])
# arithmetic with broadcasting
case("add_channel_bias", IMG, 13, [node("Add", ["x", "c"])], {"c": w(4, 1, 1)})
case("conv_add_folded", IMG, 13, [node("Conv", "xW", ["c"]), node("Add", ["c", "b"])],
     {"W": w(6, 4, 1, 1), "b": w(1, 6, 1, 1)})
case("sub_const_first", IMG, 13, [node("Sub", ["c", "x"])], {"c": np.array(0.25, np.float32)})
case("sub_mul_div", IMG, 13, [node("Sub", ["x", "c"], ["s"]), node("Mul", ["s", "k"], ["m"]), node("Div", ["m", "d"])],
     {"c": w(4, 1, 1), "k": w(4, 1, 1), "d": np.array(2.0, np.float32)})
case("add_broadcast_tensors", IMG, 13, [node("GlobalAveragePool", "x", ["g"]), node("Add", ["x", "g"])])
case("squeeze_excite", IMG, 13, [node("GlobalAveragePool", "x", ["g"]), node("Sigmoid", "g", ["s"]),
                                 node("Mul", ["x", "s"])])
case("sum_three", IMG, 8, [node("Relu", "x", ["r"]), node("Tanh", "x", ["t"]), node("Sum", ["x", "r", "t"])])
case("add_1d_conv", (2, 3, 5), 13, [node("Add", ["x", "c"])], {"c": w(3, 1)})
case("constant_of_shape", IMG, 13, [node("ConstantOfShape", ["one"], ["c"], value=numpy_helper.from_array(
    np.array([0.5], np.float32))), node("Mul", ["x", "c"])], {"one": i64(1)})
# channels: concat, split, slice
case("concat", IMG, 13, [node("Relu", "x", ["r"]), node("Concat", ["x", "r"], axis=1)])
case("concat_single", IMG, 13, [node("Concat", ["x"], ["c"], axis=1), node("Relu", "c")])
case("split_input", IMG, 13, [node("Split", ["x", "sp"], ["a", "b"], axis=1), node("Sub", ["a", "b"])],
     {"sp": i64(2, 2)})
case("split_attr", IMG, 11, [node("Split", ["x"], ["a", "b"], axis=1, split=[1, 3]),
                             node("Concat", ["b", "a"], axis=1)])
case("split_even", IMG, 18, [node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2), node("Mul", ["a", "b"])])
case("slice_inputs", IMG, 13, [node("Slice", ["x", "s", "e", "a", "st"])],
     {"s": i64(1, 0), "e": i64(2**62, 100), "a": i64(1, 2), "st": i64(2, 1)})
case("slice_attrs", IMG, 9, [node("Slice", "x", starts=[-3], ends=[-1], axes=[1])])
# chunk with shapes computed by Div: torch.chunk(x, 2, dim=1) on dynamic channels
case("chunk_shape_div", IMG, 13, [node("Shape", "x", ["s"]), node("Gather", ["s", "one"], ["c"], axis=0),
                                  node("Div", ["c", "two"], ["h"]), node("Unsqueeze", ["h", "zeros"], ["h1"]),
                                  node("Concat", ["h1", "h1"], ["sp"], axis=0),
                                  node("Split", ["x", "sp"], ["a", "b"], axis=1), node("Add", ["a", "b"])],
     {"one": np.array(1, np.int64), "two": np.array(2, np.int64), "zeros": i64(0)})
# transposes: channel shuffle, channels-last LayerNorm + Linear + GELU (ConvNeXt), layer scale
case("channel_shuffle", IMG, 13, [node("Reshape", ["x", "s1"], ["r"]), node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
                                  node("Reshape", ["t", "s2"])], {"s1": i64(-1, 2, 2, 6, 6), "s2": i64(-1, 4, 6, 6)})
case("convnext_block", IMG, 17, [
    node("Transpose", "x", ["p"], perm=[0, 2, 3, 1]), node("LayerNormalization", ["p", "ls", "lb"], ["n"], epsilon=1e-6),
    node("MatMul", ["n", "w1"], ["m1"]), node("Add", ["m1", "b1"], ["a1"]),
    node("Div", ["a1", "r2"], ["d"]), node("Erf", "d", ["e"]), node("Add", ["e", "one"], ["a"]),
    node("Mul", ["a1", "a"], ["g0"]), node("Mul", ["g0", "h"], ["g"]),
    node("MatMul", ["g", "w2"], ["m2"]), node("Add", ["b2", "m2"], ["a2"]),
    node("Transpose", ["a2"], ["q"], perm=[0, 3, 1, 2]), node("Mul", ["q", "gamma"], ["sc"]), node("Add", ["sc", "x"])],
     {"ls": w(4), "lb": w(4), "w1": w(4, 8), "b1": w(8), "w2": w(8, 4), "b2": w(4), "gamma": w(4, 1, 1), **gelu_half})
case("layer_norm_decomposed", IMG, 13, [  # PyTorch's LayerNorm before opset 17, here channels-last
    node("Transpose", "x", ["p"], perm=[0, 2, 3, 1]), node("ReduceMean", "p", ["m"], axes=[-1]),
    node("Sub", ["p", "m"], ["d"]), node("Pow", ["d", "two"], ["q"]), node("ReduceMean", "q", ["v"], axes=[-1]),
    node("Add", ["v", "eps"], ["e"]), node("Sqrt", "e", ["s"]), node("Div", ["d", "s"], ["n"]),
    node("Mul", ["n", "g"], ["ng"]), node("Add", ["ng", "b"], ["t"]), node("Transpose", "t", perm=[0, 3, 1, 2])],
     {"two": np.array(2.0, np.float32), "eps": np.array(1e-6, np.float32), "g": w(4), "b": w(4)})
case("depth_to_space", IMG, 13, [node("DepthToSpace", "x", blocksize=2, mode="CRD")])
case("transpose_kept", IMG, 13, [node("Transpose", "x", ["t"], perm=[0, 1, 3, 2]), node("Relu", "t")])
# padding, resizing, reductions
for mode in ("constant", "reflect", "edge", "wrap"):
    case(f"pad_{mode}", IMG, 19 if mode == "wrap" else 13, [node("Pad", ["x", "p", "v"], mode=mode)],
         {"p": i64(0, 0, 1, 2, 0, 0, 2, 1), "v": np.array(0.5 if mode == "constant" else 0.0, np.float32)})
case("pad_attrs", IMG, 10, [node("Pad", "x", pads=[0, 0, 1, 0, 0, 0, 0, 1], value=-1.0)])
case("pad_axes", IMG, 18, [node("Pad", ["x", "p", "", "ax"])], {"p": i64(1, 2, 0, 1), "ax": i64(2, 3)})
case("resize_nearest", IMG, 13, [node("Resize", ["x", "", "sc"], coordinate_transformation_mode="asymmetric",
                                      nearest_mode="floor")], {"sc": np.array([1, 1, 2, 1.5], np.float32)})
case("resize_linear_sizes", IMG, 13, [node("Resize", ["x", "", "", "sz"], mode="linear")], {"sz": i64(2, 4, 9, 4)})
case("resize_align_corners", IMG, 11, [node("Resize", ["x", "roi", "sc"], mode="linear",
                                            coordinate_transformation_mode="align_corners")],
     {"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 2, 2], np.float32)})
case("resize_pytorch_half_pixel", IMG, 18, [node("Resize", ["x", "", "sc"], mode="linear",
                                                 coordinate_transformation_mode="pytorch_half_pixel")],
     {"sc": np.array([1, 1, 0.5, 2], np.float32)})
case("resize_axes_sizes", IMG, 18, [node("Resize", ["x", "", "", "sz"], mode="linear", axes=[3, 2])], {"sz": i64(4, 9)})
case("resize_axes_scales", IMG, 19, [node("Resize", ["x", "", "sc"], axes=[2, 3], coordinate_transformation_mode=
                                          "asymmetric", nearest_mode="floor")], {"sc": np.array([2, 1.5], np.float32)})
case("upsample9", IMG, 9, [node("Upsample", ["x", "sc"])], {"sc": np.array([1, 1, 2, 3], np.float32)})
case("reduce_mean_keep", IMG, 13, [node("ReduceMean", "x", axes=[2, 3])])
case("reduce_mean_flat", IMG, 18, [node("ReduceMean", ["x", "ax"], keepdims=0)], {"ax": i64(-2, -1)})
case("reduce_max", IMG, 13, [node("ReduceMax", "x", axes=[-1, 2])])
case("squeeze_all_cast", IMG, 13, [node("GlobalMaxPool", "x", ["g"]), node("Squeeze", "g", ["q"]),
                                   node("Cast", "q", ["c"], to=1), node("Softmax", "c")])
case("dropout_identity", IMG, 13, [node("Dropout", "x", ["d"]), node("Identity", "d", ["i"]), node("Relu", "i")])
