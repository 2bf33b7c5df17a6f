"""This machine's FP32 peak on one thread: a Numba loop of independent fused multiply-adds at the
widest vector width the CPU has, timed in CPU time (steady on a busy machine).

    python benchmarks/peak_flops.py            # the peak at the widest width, and at LLVM's default
    python benchmarks/peak_flops.py --width 8  # at 8 float32 lanes (256-bit ymm)

LLVM vectorizes for 256-bit registers even on AVX-512 parts (it prefers ymm there), so the widest
width is forced with ``llvmlite.binding.set_option("", "-force-vector-width=16")``: an option of
the whole process, which is why each width is measured in a process of its own. The loop keeps
4 x 8 dependent FMAs per loaded vector in flight, enough to fill both FMA units: the rate is the
best of a few repeats. :func:`peak` is what compare_torch.py reports its "% of peak" against.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

REPEATS = 10
LOOPS = 20_000
LENGTH = 256  # float32 values per chain array: 4 arrays of them stay in L1


def widest_width() -> int:
    """float32 lanes of the widest vectors of this CPU: 16 with AVX-512F, 8 with AVX, else 4."""
    from llvmlite import binding

    features = binding.get_host_cpu_features()
    return 16 if features.get("avx512f") else 8 if features.get("avx") else 4


def _measure(width: int) -> float:
    """GFLOP/s of the FMA loop compiled at ``width`` lanes (0: LLVM's own choice), in this process."""
    from llvmlite import binding

    if width:
        binding.set_option("peak_flops", f"-force-vector-width={width}")
    import numba
    import numpy as np

    @numba.njit(fastmath=True)
    def fma_chains(x, a, b, loops):
        x0, x1, x2, x3 = x[0], x[1], x[2], x[3]
        for _ in range(loops):
            for t in range(x.shape[1]):
                v0, v1, v2, v3 = x0[t], x1[t], x2[t], x3[t]
                for _ in range(8):
                    v0, v1, v2, v3 = v0 * a + b, v1 * a + b, v2 * a + b, v3 * a + b
                x0[t], x1[t], x2[t], x3[t] = v0, v1, v2, v3

    x = np.ones((4, LENGTH), np.float32)
    a, b = np.float32(0.999), np.float32(0.001)
    fma_chains(x, a, b, 1)  # compile
    best = 0.0
    for _ in range(REPEATS):
        start = time.process_time()
        fma_chains(x, a, b, LOOPS)
        best = max(best, 2 * 8 * x.size * LOOPS / (time.process_time() - start))
    return best / 1e9


def _child(width, connection):
    connection.send(_measure(width))


def peak(width: int | None = None) -> float:
    """One thread's FP32 peak in GFLOP/s at ``width`` lanes (``None``: :func:`widest_width`; 0:
    LLVM's default), measured in a fresh process."""
    width = widest_width() if width is None else width
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_child, args=(width, child))
    process.start()
    value = parent.recv()
    process.join()
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, help="float32 lanes to force (0: LLVM's choice; default: the widest)")
    args = parser.parse_args(argv)
    widths = [args.width] if args.width is not None else [widest_width(), 0]
    for width in widths:
        label = f"{width} lanes ({width * 32}-bit)" if width else "LLVM's default width"
        print(f"FP32 peak, 1 thread, {label}: {peak(width):.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
