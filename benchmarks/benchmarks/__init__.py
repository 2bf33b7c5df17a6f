"""cnnrun's asv benchmarks. From the benchmarks/ folder: ``asv run --python=same --quick``.

Thread counts are pinned by asv.conf.json (``matrix.env_nobuild``): NUMBA_NUM_THREADS,
OPENBLAS_NUM_THREADS and OMP_NUM_THREADS are 2, so that runs on different machines and days
compare. They must be in the environment when a benchmark process starts: OpenBLAS reads its
variable when NumPy loads, and asv's runner loads NumPy (through pympler) before it imports this
package, so setting them here would be too late. Subprocesses the benchmarks start inherit them.
"""

import numpy as np

from cnnrun.engine import Network

LENET5 = {
    "name": "lenet5",
    "input": {"shape": [1, 28, 28]},
    "layers": [
        {"name": "conv1", "type": "conv2d", "out_channels": 6, "kernel_size": 5, "padding": 2},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"name": "conv2", "type": "conv2d", "out_channels": 16, "kernel_size": 5},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"name": "fc1", "type": "linear", "out_features": 120}, {"type": "relu"},
        {"name": "fc2", "type": "linear", "out_features": 84}, {"type": "relu"},
        {"name": "fc3", "type": "linear", "out_features": 10},
    ],
}
"""examples/lenet5.json (inline, so the suite runs wherever cnnrun is installed)."""


def parse_shape(text: str) -> tuple[int, ...]:
    """``"32x64x56x56"`` -> ``(32, 64, 56, 56)``: shapes as readable asv parameters."""
    return tuple(int(s) for s in text.split("x"))


class OneLayer:
    """One layer in a network of its own, with a seeded input batch and output gradient.

    Building it runs a forward and a backward pass once, so Numba compiles (or loads from its
    cache) before anything is timed.
    """

    def __init__(self, layer: dict, shape: tuple[int, ...], seed: int = 0):
        config = {"name": layer["type"], "input": {"shape": list(shape[1:])}, "layers": [{"name": "op", **layer}]}
        self.net = Network.from_config(config, seed=seed)
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal(shape, dtype=np.float32)
        self.grad = rng.standard_normal((shape[0], *self.net.output_shape), dtype=np.float32)
        self.forward()
        self.backward()

    def forward(self):
        """A training-mode forward pass (it keeps what backward needs)."""
        return self.net.forward(self.x, training=True)

    def backward(self):
        """The backward pass of the last forward: input and parameter gradients."""
        return self.net.backward(self.grad)
