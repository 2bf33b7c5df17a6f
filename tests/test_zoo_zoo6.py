"""examples/zoo/ networks of engineer zoo6: torchvision's parameter counts and a finite forward pass."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine import Network

ZOO = Path(__file__).resolve().parent.parent / "examples" / "zoo"


@pytest.mark.parametrize("name, total_params", [
    ("densenet121", 7_978_856),
    ("convnext_tiny", 28_589_128),
])
def test_zoo_network_has_torchvision_parameter_count_and_finite_logits(name, total_params):
    path = ZOO / f"{name}.json"
    result = CliRunner().invoke(cli, ["describe", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    description = json.loads(result.output)
    assert description["total_params"] == total_params
    assert description["layers"][-1]["type"] == "linear"

    net = Network.from_json(path, seed=0)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    y = net.forward(x)
    assert y.shape == (1, 1000)
    assert np.isfinite(y).all()
