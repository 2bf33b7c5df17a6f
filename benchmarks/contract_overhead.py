"""What the layer-contract checks (engine/contract.py) cost in a LeNet-5 training step, batch 64.

A one-off measurement on one thread (1-thread CPU time: ``NUMBA_NUM_THREADS=1``, ``time.process_time``),
so that other processes on the machine do not move the numbers much:

1. the median time of a training step (forward, cross-entropy, backward, SGD update);
2. the checks alone: the calls one step makes to ``check_output`` / ``check_backward``, replayed on the
   arrays of a real step, many times over;
3. the same step with the checks switched off, interleaved with checked steps (medians of each).

Run: ``python benchmarks/contract_overhead.py [steps]``. docs/performance.md quotes its output.
"""

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # before Numba is imported

import statistics
import sys
import time

import numpy as np

from cnnrun.engine import Network
from cnnrun.engine.contract import BatchContract
from cnnrun.engine.losses import cross_entropy
from cnnrun.engine.optim import make_optimizer
from cnnrun.engine.plugins import Registries, make_plugin_manager

sys.path.insert(0, os.path.dirname(__file__))
from benchmarks import LENET5  # noqa: E402

SGD = {"type": "sgd", "lr": 0.05, "momentum": 0.9}
BATCH = 64


class Unchecked(BatchContract):
    """The contract with its checks off (only the tuple normalization ``backward`` relies on)."""

    def check_output(self, node, output):
        pass

    def check_backward(self, node, input_grads, grads):
        return input_grads if isinstance(input_grads, (tuple, list)) else (input_grads,)


def main(steps: int = 60) -> None:
    registries = Registries.from_plugin_manager(make_plugin_manager(load_entrypoints=False))
    net = Network.from_config(LENET5, registry=registries.layers)
    optimizer = make_optimizer(dict(SGD), registries.optimizers)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, BATCH)

    def step() -> float:
        started = time.process_time()
        _, grad = cross_entropy(net.forward(x, training=True), labels)
        net.backward(grad)
        optimizer.apply(net.params, net.grads, SGD["lr"])
        return time.process_time() - started

    for _ in range(3):
        step()  # compile (or load from the cache)

    checked = net._contract.for_batch(BATCH)
    unchecked = Unchecked(net._contract, BATCH)
    calls = []
    record_output, record_backward = checked.check_output, checked.check_backward
    checked.check_output = lambda node, out: calls.append((record_output, (node, out))) or record_output(node, out)
    checked.check_backward = lambda node, g, grads: calls.append((record_backward, (node, g, grads))) or \
        record_backward(node, g, grads)
    step()
    del checked.check_output, checked.check_backward

    repeats = 20_000
    started = time.process_time()
    for _ in range(repeats):
        for function, args in calls:
            function(*args)
    per_step_checks = (time.process_time() - started) / repeats

    with_checks, without_checks = [], []
    for _ in range(steps):
        net._contract._by_batch[BATCH] = checked
        with_checks.append(step())
        net._contract._by_batch[BATCH] = unchecked
        without_checks.append(step())
    net._contract._by_batch[BATCH] = checked

    step_median = statistics.median(with_checks)
    print(f"LeNet-5 training step, batch {BATCH}, 1 thread (process_time), {steps} steps each")
    print(f"  median step with checks:    {step_median * 1e3:8.3f} ms")
    print(f"  median step without checks: {statistics.median(without_checks) * 1e3:8.3f} ms")
    print(f"  the checks alone ({len(calls)} calls per step, replayed {repeats}x): "
          f"{per_step_checks * 1e6:.1f} us per step = {100 * per_step_checks / step_median:.3f} % of a step")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
