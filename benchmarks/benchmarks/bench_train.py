"""A LeNet-5 training step at batch 64: forward, cross-entropy, backward and an SGD update."""

import numpy as np

from cnnrun.engine import Network
from cnnrun.engine.losses import cross_entropy
from cnnrun.engine.optim import make_optimizer
from cnnrun.engine.plugins import Registries, make_plugin_manager

from . import LENET5

SGD = {"type": "sgd", "lr": 0.05, "momentum": 0.9}  # examples/lenet_digits.json's optimizer


class LeNet5TrainingStep:
    def setup(self):
        registries = Registries.from_plugin_manager(make_plugin_manager(load_entrypoints=False))
        self.net = Network.from_config(LENET5, registry=registries.layers)
        self.optimizer = make_optimizer(dict(SGD), registries.optimizers)
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((64, 1, 28, 28), dtype=np.float32)
        self.labels = rng.integers(0, 10, 64)
        self.step()  # compile (or load from the cache) before timing

    def step(self):
        loss, grad = cross_entropy(self.net.forward(self.x, training=True), self.labels)
        self.net.backward(grad, input_gradient=False)
        self.optimizer.apply(self.net.params, self.net.grads, SGD["lr"])

    def time_step(self):
        self.step()

    def peakmem_step(self):
        self.step()
