"""The example networks train to the accuracy the README states (the real runs, seeded)."""

import json
from pathlib import Path

import pytest

from cnnrun.engine.train import train


@pytest.mark.parametrize("example, epochs, accuracy", [
    ("examples/lenet_digits.json", 20, 0.97),   # what PyTorch reaches with the same network and split
    ("examples/small_digits.json", 15, 0.98),   # README: about 0.99
])
def test_example_reaches_its_accuracy(tmp_path, example, epochs, accuracy):
    result = train(example, out=tmp_path / "run")
    assert [m["epoch"] for m in result.metrics] == list(range(1, epochs + 1))
    best = max(m["val_accuracy"] for m in result.metrics)
    assert best >= accuracy, f"{example}: best validation accuracy {best:.4f} < {accuracy}"
    assert result.metrics[-1]["val_accuracy"] >= accuracy - 0.01


def test_lenet_digits_is_the_lenet5_example():
    """The network the README describes (61,706 parameters) is the one it trains."""
    described = json.loads(Path("examples/lenet5.json").read_text())
    trained = json.loads(Path("examples/lenet_digits.json").read_text())
    assert described["layers"] == trained["layers"] and described["input"] == trained["input"]
