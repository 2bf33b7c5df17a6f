"""The zoo's parameterized layers are torchvision's, in torchvision's state_dict order, so that its
weights load one to one: parameter shapes worked out from each architecture's definition."""

from pathlib import Path

import pytest

from cnnrun.engine import Network

ZOO = Path(__file__).resolve().parent.parent / "examples" / "zoo"


def conv_bn(in_channels, out_channels, kernel_size, conv_bias=False):
    """The parameter shapes of nn.Conv2d(bias=conv_bias) followed by nn.BatchNorm2d."""
    conv = [(out_channels, in_channels, kernel_size, kernel_size)] + ([(out_channels,)] if conv_bias else [])
    return conv + [(out_channels,), (out_channels,)]


def resnet18_shapes():
    """torchvision.models.resnet18().named_parameters() shapes."""
    shapes = conv_bn(3, 64, 7)
    in_channels = 64
    for channels in (64, 128, 256, 512):
        for block in range(2):
            shapes += conv_bn(in_channels, channels, 3) + conv_bn(channels, channels, 3)
            if in_channels != channels:
                shapes += conv_bn(in_channels, channels, 1)  # downsample.0, downsample.1
            in_channels = channels
    return shapes + [(1000, 512), (1000,)]


def vgg11_bn_shapes():
    """torchvision.models.vgg11_bn().named_parameters() shapes."""
    shapes, in_channels = [], 3
    for channels in (64, 128, 256, 256, 512, 512, 512, 512):
        shapes += conv_bn(in_channels, channels, 3, conv_bias=True)
        in_channels = channels
    return shapes + [(4096, 512 * 7 * 7), (4096,), (4096, 4096), (4096,), (1000, 4096), (1000,)]


def shufflenet_v2_shapes(stage_repeats=(4, 8, 4), channels=(24, 48, 96, 192, 1024)):
    """The parameter shapes of torchvision's ShuffleNetV2, in state_dict order."""
    shapes = conv_bn(3, channels[0], 3)
    in_channels = channels[0]
    for repeats, out_channels in zip(stage_repeats, channels[1:4]):
        half = out_channels // 2
        for unit in range(repeats):
            if unit == 0:
                shapes += conv_bn(1, in_channels, 3) + conv_bn(in_channels, half, 1)
                shapes += conv_bn(in_channels, half, 1)
            else:
                shapes += conv_bn(half, half, 1)
            shapes += conv_bn(1, half, 3) + conv_bn(half, half, 1)
        in_channels = out_channels
    shapes += conv_bn(in_channels, channels[4], 1)
    return shapes + [(1000, channels[4]), (1000,)]


def regnet_x_shapes(widths=(32, 64, 160, 400), depths=(1, 2, 7, 12), group_width=16, stem=32):
    """The parameter shapes of torchvision's RegNet-X (no squeeze-and-excitation), in state_dict order."""
    shapes = conv_bn(3, stem, 3)
    in_channels = stem
    for width, depth in zip(widths, depths):
        for block in range(depth):
            if block == 0:
                shapes += conv_bn(in_channels, width, 1)
            shapes += conv_bn(in_channels, width, 1) + conv_bn(group_width, width, 3) + conv_bn(width, width, 1)
            in_channels = width
    return shapes + [(1000, in_channels), (1000,)]


@pytest.mark.parametrize("name, torchvision_shapes", [
    ("resnet18", resnet18_shapes), ("vgg11_bn", vgg11_bn_shapes),
    ("shufflenet_v2_x0_5", shufflenet_v2_shapes), ("regnet_x_400mf", regnet_x_shapes)])
def test_parameter_shapes_in_torchvisions_order(name, torchvision_shapes):
    net = Network.from_json(ZOO / f"{name}.json")
    assert [array.shape for layer in net.params.values() for array in layer.values()] == torchvision_shapes()


def test_googlenet_uses_basic_conv2d_everywhere():
    """torchvision's BasicConv2d: conv without bias, then batchnorm with eps 0.001."""
    net = Network.from_json(str(ZOO / "googlenet.json"))
    layers = net.config["layers"]
    convs = [i for i, layer in enumerate(layers) if layer["type"] == "conv2d"]
    assert len(convs) == 57
    assert all("bias" not in net.params[layers[i]["name"]] for i in convs)
    assert all(layers[i + 1]["type"] == "batchnorm" and layers[i + 1]["eps"] == 0.001 for i in convs)
