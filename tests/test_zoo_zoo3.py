"""torchvision zoo networks in examples/zoo/: parameter counts and a forward pass on 3x224x224."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine import Network

ZOO = Path(__file__).resolve().parent.parent / "examples" / "zoo"


def describe_total_params(path):
    result = CliRunner().invoke(cli, ["describe", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["total_params"]


@pytest.mark.parametrize("name, torchvision_params", [
    ("mobilenet_v3_small", 2_542_856),
    ("efficientnet_b0", 5_288_548),
])
def test_zoo_network_matches_torchvision_and_runs(name, torchvision_params):
    path = ZOO / f"{name}.json"
    assert describe_total_params(path) == torchvision_params
    net = Network.from_json(path)
    assert net.parameter_count() == torchvision_params
    assert net.config["layers"][-1]["type"] == "linear"
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    y = net.forward(x)
    assert y.shape == (1, 1000)
    assert np.isfinite(y).all()
