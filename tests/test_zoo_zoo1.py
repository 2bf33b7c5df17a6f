"""examples/zoo/resnet18.json and vgg11_bn.json have torchvision's parameter counts and parameter
shapes (in torchvision's ``named_parameters()`` order, so its weights load one to one), and a forward
pass of one 3x224x224 image gives 1000 finite logits."""

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine.network import Network

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


def check_zoo_network(name, total_params, torchvision_shapes):
    path = ZOO / f"{name}.json"
    result = CliRunner().invoke(cli, ["describe", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["total_params"] == total_params
    assert report["layers"][-1]["type"] == "linear"
    net = Network.from_json(path)
    shapes = [array.shape for layer in net.params.values() for array in layer.values()]
    assert shapes == torchvision_shapes
    assert sum(int(np.prod(s)) for s in shapes) == total_params
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    y = net.forward(x)
    assert y.shape == (1, 1000)
    assert np.isfinite(y).all()


def test_resnet18_is_torchvisions():
    check_zoo_network("resnet18", 11_689_512, resnet18_shapes())


def test_vgg11_bn_is_torchvisions():
    check_zoo_network("vgg11_bn", 132_868_840, vgg11_bn_shapes())
