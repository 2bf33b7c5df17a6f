"""examples/zoo: shufflenet_v2_x0_5 and regnet_x_400mf build with torchvision's parameter counts and run."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine import Network

ZOO = Path(__file__).resolve().parent.parent / "examples" / "zoo"


def shufflenet_v2_shapes(stage_repeats=(4, 8, 4), channels=(24, 48, 96, 192, 1024)):
    """The parameter shapes of torchvision's ShuffleNetV2, in state_dict order."""
    def conv_bn(out_channels, in_per_group, k):
        return [(out_channels, in_per_group, k, k), (out_channels,), (out_channels,)]

    shapes = conv_bn(channels[0], 3, 3)
    in_channels = channels[0]
    for repeats, out_channels in zip(stage_repeats, channels[1:4]):
        half = out_channels // 2
        for unit in range(repeats):
            if unit == 0:
                shapes += conv_bn(in_channels, 1, 3) + conv_bn(half, in_channels, 1)
                shapes += conv_bn(half, in_channels, 1)
            else:
                shapes += conv_bn(half, half, 1)
            shapes += conv_bn(half, 1, 3) + conv_bn(half, half, 1)
        in_channels = out_channels
    shapes += conv_bn(channels[4], in_channels, 1)
    return shapes + [(1000, channels[4]), (1000,)]


def regnet_x_shapes(widths=(32, 64, 160, 400), depths=(1, 2, 7, 12), group_width=16, stem=32):
    """The parameter shapes of torchvision's RegNet-X (no squeeze-and-excitation), in state_dict order."""
    def conv_bn(out_channels, in_per_group, k):
        return [(out_channels, in_per_group, k, k), (out_channels,), (out_channels,)]

    shapes = conv_bn(stem, 3, 3)
    in_channels = stem
    for width, depth in zip(widths, depths):
        for block in range(depth):
            if block == 0:
                shapes += conv_bn(width, in_channels, 1)
            shapes += conv_bn(width, in_channels, 1) + conv_bn(width, group_width, 3) + conv_bn(width, width, 1)
            in_channels = width
    return shapes + [(1000, in_channels), (1000,)]


NETWORKS = [
    ("shufflenet_v2_x0_5", 1_366_792, shufflenet_v2_shapes),
    ("regnet_x_400mf", 5_495_976, regnet_x_shapes),
]


@pytest.mark.parametrize("name, total_params, torchvision_shapes", NETWORKS)
def test_zoo_network_matches_torchvision_and_runs(name, total_params, torchvision_shapes):
    path = ZOO / f"{name}.json"
    result = CliRunner().invoke(cli, ["describe", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert described["total_params"] == total_params
    assert described["layers"][-1]["type"] == "linear"

    net = Network.from_json(path, seed=0)
    shapes = [array.shape for layer in net.params.values() for array in layer.values()]
    assert shapes == torchvision_shapes()
    assert sum(int(np.prod(shape)) for shape in shapes) == total_params

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    y = net.forward(x)
    assert y.shape == (1, 1000)
    assert np.isfinite(y).all()
