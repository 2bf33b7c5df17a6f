"""The zoo networks mobilenet_v2 and mnasnet0_5 (examples/zoo/): torchvision's parameter counts, a forward pass."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine import Network

ZOO = Path(__file__).resolve().parent.parent / "examples" / "zoo"


@pytest.mark.parametrize(
    "name, torchvision_params",
    [("mobilenet_v2", 3_504_872), ("mnasnet0_5", 2_218_512)],
)
def test_zoo_network_matches_torchvision_and_runs(name, torchvision_params):
    path = ZOO / f"{name}.json"
    result = CliRunner().invoke(cli, ["describe", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert described["total_params"] == torchvision_params
    assert described["layers"][-1]["type"] == "linear"

    net = Network.from_json(path)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    y = net.forward(x)
    assert y.shape == (1, 1000)
    assert np.isfinite(y).all()
