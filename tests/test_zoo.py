"""examples/zoo: torchvision's classification CNNs as cnnrun files. Each has torchvision's parameter
count (``cnnrun describe --format json``, ``total_params``) and gives 1000 finite outputs for one
3x224x224 image (issue 12)."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine import Network

ZOO = Path(__file__).resolve().parent.parent / "examples" / "zoo"
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512, "mobilenet_v2": 3_504_872, "mobilenet_v3_small": 2_542_856,
    "squeezenet1_1": 1_235_496, "shufflenet_v2_x0_5": 1_366_792, "efficientnet_b0": 5_288_548,
    "densenet121": 7_978_856, "googlenet": 6_624_904, "vgg11_bn": 132_868_840, "mnasnet0_5": 2_218_512,
    "regnet_x_400mf": 5_495_976, "convnext_tiny": 28_589_128,
}


def test_the_zoo_is_these_networks():
    assert sorted(p.stem for p in ZOO.glob("*.json")) == sorted(TORCHVISION_PARAMS)


@pytest.mark.parametrize("name", TORCHVISION_PARAMS)
def test_zoo_network_has_torchvisions_parameter_count_and_runs(name):
    path = ZOO / f"{name}.json"
    result = CliRunner().invoke(cli, ["describe", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert described["total_params"] == TORCHVISION_PARAMS[name]
    # logits from a linear layer, as torchvision; squeezenet's come from a 1x1 conv and pooling
    assert described["layers"][-1]["type"] == ("global_avgpool" if name == "squeezenet1_1" else "linear")
    net = Network.from_json(path)
    y = net.forward(np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32))
    assert y.shape == (1, 1000) and np.isfinite(y).all()
