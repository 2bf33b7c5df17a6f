"""Whole networks: examples/resnet20_cifar10.json and examples/mobilenet_v1.json, an inference call
(the inference plan: batchnorm folded, add and relu fused) and a training step (forward,
cross-entropy, backward, SGD momentum), at the batch sizes of benchmarks/compare_networks.py.

The network files are read from the source tree this suite lives in (asv runs it from there).
"""

from pathlib import Path

import numpy as np

from cnnrun.engine import Network
from cnnrun.engine.losses import cross_entropy
from cnnrun.engine.optim import make_optimizer
from cnnrun.engine.plugins import Registries, make_plugin_manager

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SGD = {"type": "sgd", "lr": 0.05, "momentum": 0.9}


class _Network:
    """``file``'s network with a seeded batch of ``batch`` inputs and labels."""

    file = ""
    param_names = ["batch"]

    def setup(self, batch):
        registries = Registries.from_plugin_manager(make_plugin_manager(load_entrypoints=False))
        self.net = Network.from_json(EXAMPLES / self.file, registry=registries.layers)
        self.optimizer = make_optimizer(dict(SGD), registries.optimizers)
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((batch, *self.net.input_shape), dtype=np.float32)
        self.labels = rng.integers(0, self.net.output_shape[0], batch)

    def step(self):
        loss, grad = cross_entropy(self.net.forward(self.x, training=True), self.labels)
        self.net.backward(grad)
        self.optimizer.apply(self.net.params, self.net.grads, SGD["lr"])


class _Inference(_Network):
    def setup(self, batch):
        super().setup(batch)
        self.net.inference()
        self.net.forward(self.x)  # compile (or load from the cache) before timing

    def time_inference(self, batch):
        self.net.forward(self.x)

    def peakmem_inference(self, batch):
        self.net.forward(self.x)


class _TrainingStep(_Network):
    def setup(self, batch):
        super().setup(batch)
        self.step()

    def time_step(self, batch):
        self.step()


class ResNet20Inference(_Inference):
    file = "resnet20_cifar10.json"
    params = [[1, 32]]


class ResNet20TrainingStep(_TrainingStep):
    file = "resnet20_cifar10.json"
    params = [[128]]


class MobileNetV1Inference(_Inference):
    file = "mobilenet_v1.json"
    params = [[1, 16]]


class MobileNetV1TrainingStep(_TrainingStep):
    file = "mobilenet_v1.json"
    params = [[16]]
