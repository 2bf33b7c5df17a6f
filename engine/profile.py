"""Per-layer timing of a network's forward and backward passes (``cnnrun profile``, like ``caffe time``).

One untimed warm-up pass (it compiles or loads the Numba kernels), then ``iterations`` timed
training-mode passes on a seeded random batch. Per layer: the median over the iterations of its
forward and backward wall time, read through the network's ``timer=`` hook. FLOP counts are
2 x MACs: a forward pass does ``macs`` multiply-accumulates per sample; a backward pass does about
twice that (the input gradient and the weight gradient), so forward + backward ~ 3 x MACs.
"""

from __future__ import annotations

import statistics
import sys
import time
import tracemalloc
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

from .errors import CnnrunError

FORWARD, BACKWARD = "forward", "backward"
BACKWARD_WORK = 2  # a backward pass ~ 2 x the forward MACs (input gradient + weight gradient)


class LayerTimer:
    """The ``timer=`` hook of :meth:`Network.forward`/``backward``: records each layer's wall time.

    It synchronizes the device before each clock read, so queued GPU work counts for its layer.
    """

    def __init__(self, backend):
        self.synchronize = backend.synchronize
        self.seconds: dict[tuple[str, str], list[float]] = defaultdict(list)

    @contextmanager
    def __call__(self, name: str, phase: str):
        self.synchronize()
        start = time.perf_counter()
        yield
        self.synchronize()
        self.seconds[name, phase].append(time.perf_counter() - start)

    def median_ms(self, name: str, phase: str) -> float:
        """The median time in milliseconds (0 for a layer that never ran in ``phase``)."""
        samples = self.seconds.get((name, phase))
        return 1e3 * statistics.median(samples) if samples else 0.0


def profile_network(net, batch_size: int = 64, iterations: int = 10, seed: int = 0) -> dict:
    """Time ``net`` (on its device) layer by layer; returns the ``cnnrun profile`` report
    (documented in docs/profile.md).

    Runs training-mode passes, so batchnorm running statistics and ``net.grads`` change.
    """
    if batch_size < 1 or iterations < 1:
        raise CnnrunError(f"batch_size and iterations must be >= 1; got batch_size={batch_size}, "
                          f"iterations={iterations}")
    rng = np.random.default_rng(seed)
    x = net.backend.asarray(rng.standard_normal((batch_size, *net.input_shape)), net.dtype)  # on the device
    grad = net.backend.asarray(rng.standard_normal((batch_size, *net.output_shape)), net.dtype)
    sync = net.backend.synchronize

    def one_pass(timer=None) -> tuple[float, float]:
        """Forward and backward wall seconds of one training-mode pass."""
        sync()
        start = time.perf_counter()
        net.forward(x, training=True, timer=timer)
        sync()
        middle = time.perf_counter()
        net.backward(grad, timer=timer)
        sync()
        return middle - start, time.perf_counter() - middle

    warmup = sum(one_pass())
    timer = LayerTimer(net.backend)
    passes = [one_pass(timer) for _ in range(iterations)]
    traced_peak = _traced_peak_bytes(one_pass)
    report = {"network": net.name, "device": net.device, "batch_size": batch_size, "iterations": iterations,
              "warmup_seconds": warmup}
    report["layers"] = _layer_rows(net, timer, batch_size)
    report["total"] = _totals(report["layers"], passes)
    report["samples_per_second"] = batch_size / (report["total"]["forward_backward_ms"] / 1e3)
    report["peak_memory"] = {"traced_bytes": traced_peak, "process_rss_bytes": process_peak_rss_bytes()}
    return report


def _layer_rows(net, timer: LayerTimer, batch_size: int) -> list[dict]:
    rows = []
    for row in net.summary():
        forward_ms, backward_ms = timer.median_ms(row["name"], FORWARD), timer.median_ms(row["name"], BACKWARD)
        macs = row["macs"] * batch_size
        rows.append({"name": row["name"], "type": row["type"], "forward_ms": forward_ms,
                     "backward_ms": backward_ms, "share": 0.0, "macs": macs,
                     "gflops": gflops(macs, forward_ms, backward_ms)})
    total = sum(r["forward_ms"] + r["backward_ms"] for r in rows)
    for r in rows:
        r["share"] = (r["forward_ms"] + r["backward_ms"]) / total if total > 0 else 0.0
    return rows


def _totals(rows: list[dict], passes: list[tuple[float, float]]) -> dict:
    forward_ms = 1e3 * statistics.median(f for f, _ in passes)
    backward_ms = 1e3 * statistics.median(b for _, b in passes)
    both_ms = 1e3 * statistics.median(f + b for f, b in passes)
    macs = sum(r["macs"] for r in rows)
    return {"forward_ms": forward_ms, "backward_ms": backward_ms, "forward_backward_ms": both_ms,
            "layers_forward_ms": sum(r["forward_ms"] for r in rows),
            "layers_backward_ms": sum(r["backward_ms"] for r in rows),
            "macs": macs, "gflops": gflops(macs, forward_ms, both_ms - forward_ms)}


def gflops(macs: int, forward_ms: float, backward_ms: float) -> dict:
    """Achieved GFLOP/s, counting 2 FLOPs per MAC: ``forward`` = 2 x MACs / forward time,
    ``forward_backward`` = 2 x 3 x MACs / (forward + backward time); ``None`` without MACs or time."""
    def rate(flops, ms):
        return flops / (ms * 1e-3) / 1e9 if macs and ms > 0 else None

    return {"forward": rate(2 * macs, forward_ms),
            "forward_backward": rate(2 * (1 + BACKWARD_WORK) * macs, forward_ms + backward_ms)}


def _traced_peak_bytes(one_pass) -> int:
    """Peak bytes allocated through Python's allocators (NumPy arrays included) during one more pass,
    above what was allocated before it. Run apart from the timed passes: tracing slows allocation."""
    already = tracemalloc.is_tracing()
    if not already:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        one_pass()
        return tracemalloc.get_traced_memory()[1] - baseline
    finally:
        if not already:
            tracemalloc.stop()


def process_peak_rss_bytes() -> int | None:
    """The process's peak resident set size since it started (``getrusage``); None where unavailable."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB
