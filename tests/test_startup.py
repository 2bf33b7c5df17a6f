"""Start-up: with a warm Numba cache, the first training step compiles nothing.

The evidence is Numba's own: two processes share an empty ``NUMBA_CACHE_DIR``; the first one fills
it, and in the second every cnnrun kernel that ran reports cache hits and no cache misses
(``Dispatcher.stats``). Wall-clock start-up times are in the asv suite (benchmarks/), not here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

LENET = Path(__file__).resolve().parent.parent / "examples" / "lenet5.json"

ONE_STEP = """
import json, sys
import numpy as np
from numba.core.dispatcher import Dispatcher
from cnnrun.engine import Network
from cnnrun.engine.losses import cross_entropy
from cnnrun.engine.optim import make_optimizer
from cnnrun.engine.plugins import default_registries

registries = default_registries()
net = Network.from_json(sys.argv[1], registry=registries.layers)
optimizer = make_optimizer({"type": "sgd", "lr": 0.05, "momentum": 0.9}, registries.optimizers)
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 1, 28, 28), dtype=np.float32)
loss, grad = cross_entropy(net.forward(x, training=True), rng.integers(0, 10, 64))
net.backward(grad)
optimizer.apply(net.params, net.grads, 0.05)
net.forward(x)  # evaluation, as at the end of an epoch

kernels = {}
for module_name, module in list(sys.modules.items()):
    if module_name.startswith("cnnrun."):
        for value in vars(module).values():
            if isinstance(value, Dispatcher) and value.signatures:  # a kernel that ran here
                name = f"{value.py_func.__module__}.{value.py_func.__qualname__}"
                stats = value.stats
                kernels[name] = (sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
print(json.dumps(kernels))
"""


def _kernels_after_one_step(cache_dir) -> dict[str, list[int]]:
    """``{kernel: [cache hits, cache misses]}`` of a new process that ran one LeNet-5 training step."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", ONE_STEP, str(LENET)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_second_process_loads_every_kernel_from_the_cache(tmp_path):
    first = _kernels_after_one_step(tmp_path)
    assert all(misses > 0 for _, misses in first.values()), first  # an empty cache: all compiled
    second = _kernels_after_one_step(tmp_path)
    assert {name.split(".")[2] for name in second} >= {"conv", "pool"}, second  # the step ran kernels
    compiled = {name: counts for name, counts in second.items() if counts[1] or not counts[0]}
    assert not compiled, f"compiled again instead of loaded from the cache: {compiled}"
