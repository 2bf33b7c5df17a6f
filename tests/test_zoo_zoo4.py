"""examples/zoo/squeezenet1_1.json and googlenet.json: torchvision's parameter counts and a finite forward pass."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine.network import Network

ZOO = Path(__file__).resolve().parent.parent / "examples" / "zoo"


@pytest.mark.parametrize("name, total_params", [
    ("squeezenet1_1", 1_235_496),   # torchvision.models.squeezenet1_1()
    ("googlenet", 6_624_904),       # torchvision.models.googlenet(aux_logits=False, init_weights=True)
])
def test_zoo_network_matches_torchvision_count_and_forwards(name, total_params):
    path = ZOO / f"{name}.json"
    result = CliRunner().invoke(cli, ["describe", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total_params"] == total_params

    net = Network.from_json(str(path))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    out = net.forward(x)
    assert out.shape == (1, 1000)
    assert np.isfinite(out).all()
