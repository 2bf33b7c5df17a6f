"""Start-up costs, each in a fresh Python process: Numba compilation of the first call with an
empty cache and with a warm one, and the ``cnnrun`` command (targets: ``--help`` under 0.5 s,
``describe`` of LeNet-5 under 1.5 s)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import LENET5

FIRST_CALL = """
import json, sys, time
import numpy as np
from cnnrun.engine import Network
from cnnrun.engine.losses import cross_entropy
from cnnrun.engine.optim import make_optimizer
from cnnrun.engine.plugins import default_registries

workload, config = sys.argv[1], json.loads(sys.argv[2])
registries = default_registries()
net = Network.from_config(config, registry=registries.layers)
x = np.random.default_rng(0).standard_normal((64, *net.input_shape), dtype=np.float32)
started = time.perf_counter()
if workload == "conv2d forward":
    net.forward(x)
else:
    optimizer = make_optimizer({"type": "sgd", "lr": 0.05, "momentum": 0.9}, registries.optimizers)
    loss, grad = cross_entropy(net.forward(x, training=True), np.arange(64) % 10)
    net.backward(grad)
    optimizer.apply(net.params, net.grads, 0.05)
print(time.perf_counter() - started)
"""
CONV = {"name": "conv", "input": {"shape": [6, 14, 14]},
        "layers": [{"type": "conv2d", "out_channels": 16, "kernel_size": 5}]}
WORKLOADS = {"conv2d forward": CONV, "lenet5 training step": LENET5}


def first_call_seconds(workload: str, cache_dir: str) -> float:
    """Seconds of the first call of ``workload`` in a new process whose Numba cache is ``cache_dir``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    out = subprocess.run([sys.executable, "-c", FIRST_CALL, workload, json.dumps(WORKLOADS[workload])],
                         env=env, capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


class CompileTime:
    """The first call's seconds, compilation included: ``cold`` starts from an empty Numba cache,
    ``cached`` from one that an earlier process filled (loading replaces compiling)."""

    params = [list(WORKLOADS), ["cold", "cached"]]
    param_names = ["workload", "cache"]
    unit = "seconds"
    timeout = 600

    def track_first_call(self, workload, cache):
        with tempfile.TemporaryDirectory() as cache_dir:
            if cache == "cached":
                first_call_seconds(workload, cache_dir)
            return first_call_seconds(workload, cache_dir)


class Command:
    """``cnnrun --help`` and ``cnnrun describe`` of LeNet-5, interpreter start-up included."""

    number = 1
    repeat = (3, 10, 30.0)
    warmup_time = 0

    def setup(self):
        self.folder = tempfile.TemporaryDirectory()
        self.network = Path(self.folder.name) / "lenet5.json"
        self.network.write_text(json.dumps(LENET5))

    def teardown(self):
        self.folder.cleanup()

    def _cnnrun(self, *args):
        subprocess.run([sys.executable, "-m", "cnnrun.cli", *args], check=True, capture_output=True)

    def time_help(self):
        self._cnnrun("--help")

    def time_describe(self):
        self._cnnrun("describe", str(self.network))
