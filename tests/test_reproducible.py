"""Weight gradients are bit-identical whatever the number of threads: each parallel sum keeps the
partial sums of fixed chunks of its work (engine/jit.py, REDUCTION_CHUNKS), not of threads."""

import numba
import numpy as np
import pytest

from cnnrun.engine import Context, jit
from cnnrun.engine.plugins import get_backend
from cnnrun.plugins.common import Geometry
from cnnrun.plugins.conv import cpu

THREADS = min(2, numba.config.NUMBA_NUM_THREADS)


def _geometry(kernel, stride=1, padding=0, groups=1):
    return Geometry((kernel, kernel), (stride, stride), (padding, padding), (1, 1), groups, (padding, padding))


CASES = {  # name: (x shape, out channels, geometry, algorithm): one per path of the weight gradient
    "direct": ((5, 6, 9, 9), 8, _geometry(3, padding=1), None),
    "im2col": ((5, 6, 9, 9), 8, _geometry(3, stride=2, padding=1), None),
    "pointwise": ((7, 16, 4, 4), 12, _geometry(1), None),
    "grouped": ((3, 8, 7, 7), 8, _geometry(3, padding=1, groups=2), "im2col"),
    "winograd": ((9, 32, 8, 8), 32, _geometry(3, padding=1), "winograd"),
    "one sample": ((1, 6, 9, 9), 8, _geometry(3, padding=1), None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_weight_gradient_does_not_depend_on_the_threads(rng, monkeypatch, case):
    shape, out_channels, geom, algorithm = CASES[case]
    monkeypatch.setattr(jit, "PARALLEL_MIN_WORK", 0)  # every kernel on all the threads
    x = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal((out_channels, shape[1] // geom.groups, *geom.kernel)).astype(np.float32)
    out_hw = tuple((shape[2 + i] + 2 * geom.padding[i] - geom.kernel[i]) // geom.stride[i] + 1 for i in range(2))
    grad = rng.standard_normal((shape[0], out_channels, *out_hw)).astype(np.float32)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, THREADS):
            numba.set_num_threads(threads)
            grad_w, grad_b = np.empty_like(weight), np.empty(out_channels, np.float32)
            dx = cpu.conv2d_backward(Context(backend=get_backend("cpu")), x, grad, weight, geom, grad_w, grad_b,
                                     algorithm)
            results.append((grad_w, dx))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert np.abs(results[0][0]).max() > 0


@numba.njit
def _threads_inside():
    return numba.get_num_threads()


def test_num_threads_follows_set_num_threads_and_launch_restores_it():
    """:func:`jit.num_threads` (Numba's count without its lock) is the calling thread's count, as
    ``numba.get_num_threads()``, after every ``set_num_threads`` (a kernel sizing its per-thread
    buffers by a stale count would index past them); :func:`jit.launch` runs a small kernel on one
    thread and gives the count back, a large one on all."""
    before = numba.get_num_threads()
    try:
        for threads in (1, THREADS, 1, THREADS):
            numba.set_num_threads(threads)
            assert jit.num_threads() == numba.get_num_threads() == threads
            assert jit.launch(_threads_inside, 0) == 1
            assert jit.launch(_threads_inside, jit.PARALLEL_MIN_WORK) == threads
            assert jit.num_threads() == numba.get_num_threads() == threads
    finally:
        numba.set_num_threads(before)
    assert jit.num_threads() == before
