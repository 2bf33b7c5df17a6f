"""examples/zoo/squeezenet1_1.json and googlenet.json: torchvision's parameter counts and a finite forward pass."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine.network import Network

ZOO = Path(__file__).resolve().parent.parent / "examples" / "zoo"


@pytest.mark.parametrize("name, total_params, parameterized_layers, last_weight", [
    # torchvision.models.squeezenet1_1(): 26 convs with bias; logits from classifier.1, a 1x1 conv
    ("squeezenet1_1", 1_235_496, 26, (1000, 512, 1, 1)),
    # torchvision.models.googlenet(aux_logits=False): 57 BasicConv2d (conv + batchnorm), then fc
    ("googlenet", 6_624_904, 115, (1000, 1024)),
])
def test_zoo_network_matches_torchvision_count_and_forwards(name, total_params, parameterized_layers, last_weight):
    path = ZOO / f"{name}.json"
    result = CliRunner().invoke(cli, ["describe", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total_params"] == total_params

    net = Network.from_json(str(path))
    weights = [params["weight"].shape for params in net.params.values() if params]
    assert (len(weights), weights[-1]) == (parameterized_layers, last_weight)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    out = net.forward(x)
    assert out.shape == (1, 1000)
    assert np.isfinite(out).all()


def test_googlenet_uses_basic_conv2d_everywhere():
    """torchvision's BasicConv2d: conv without bias, then batchnorm with eps 0.001."""
    net = Network.from_json(str(ZOO / "googlenet.json"))
    layers = net.config["layers"]
    convs = [i for i, layer in enumerate(layers) if layer["type"] == "conv2d"]
    assert len(convs) == 57
    assert all("bias" not in net.params[layers[i]["name"]] for i in convs)
    assert all(layers[i + 1]["type"] == "batchnorm" and layers[i + 1]["eps"] == 0.001 for i in convs)
