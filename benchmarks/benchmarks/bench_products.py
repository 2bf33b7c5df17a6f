"""The register-blocked products every conv and linear layer runs on (plugins/products), alone, on
one thread: Winograd's (O, C) @ (C, T) products and the direct conv's shifted rows, and their
dot-product forms (the weight gradients). ``track_`` reports GFLOP/s, to compare with
``benchmarks/peak_flops.py``."""

import time

import numba
import numpy as np

from cnnrun.plugins.products import cpu as products

SHAPES = {"128x128x252": (128, 128, 252), "32x32x256": (32, 32, 256), "16x144x1086": (16, 144, 1086)}


class Products:
    params = [list(SHAPES), ["rows_product", "matrix_product"]]
    param_names = ["shape", "product"]

    def setup(self, shape, product):
        self.threads = numba.get_num_threads()
        numba.set_num_threads(1)
        rows, depth, pixels = SHAPES[shape]
        rng = np.random.default_rng(0)
        a = rng.standard_normal((rows, depth)).astype(np.float32)
        b = rng.standard_normal((depth, pixels)).astype(np.float32)
        flat, starts = b.reshape(-1), np.arange(depth, dtype=np.int64) * pixels
        out = np.zeros((rows, pixels), np.float32)
        calls = {"rows_product": lambda: products.rows_product(a, flat, starts, np.int64(0), pixels, out),
                 "matrix_product": lambda: products.matrix_product(a, b, pixels, out)}
        self.call, self.flops = calls[product], 2 * rows * depth * pixels
        self.call()  # compile

    def teardown(self, shape, product):
        numba.set_num_threads(self.threads)

    def time_product(self, shape, product):
        self.call()

    def track_gflops(self, shape, product):
        start, repeats = time.perf_counter(), 0
        while time.perf_counter() - start < 0.2:
            self.call()
            repeats += 1
        return self.flops * repeats / (time.perf_counter() - start) / 1e9

    track_gflops.unit = "GFLOP/s"
