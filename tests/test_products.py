"""The register-blocked products of plugins/products (their blocks in LLVM IR, plugins/products/
blocks.py) against NumPy, over random sizes: whole and masked blocks, padded rows, row strides,
both dtypes, and (in a subprocess) the 256-bit code an AVX2-only CPU gets."""

import os
import subprocess
import sys

import numpy as np
import pytest

from cnnrun.plugins.products import blocks
from cnnrun.plugins.products import cpu as products

TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}


def _sizes(rng, count):
    """(rows, taps, pixels): rows a multiple of 4, pixels from 1 to a few blocks (odd ones too)."""
    widths = [1, 3, 15, 16, 17, 31, 63, 64, 65, 100, 129, 200]
    return [(4 * int(rng.integers(1, 11)), int(rng.integers(1, 120)), int(rng.choice(widths))) for _ in range(count)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_product_is_a_matrix_product_of_shifted_runs(rng, dtype):
    for rows, taps, m in _sizes(rng, 24):  # rows up to 40: narrow blocks and 4-row ones after them
        a = rng.standard_normal((rows, taps)).astype(dtype)
        src = rng.standard_normal(3 * taps + m + 7).astype(dtype)
        offsets = rng.integers(0, 3 * taps, size=taps).astype(np.int64)
        shift = np.int64(rng.integers(0, 7))
        out = np.full((rows, m + 5), np.nan, dtype)
        out[:, :m] = rng.standard_normal((rows, m))
        expected = out[:, :m] + a.astype(np.float64) @ np.stack([src[o + shift:o + shift + m] for o in offsets])
        products.rows_product(a, src, offsets, shift, m, out)
        np.testing.assert_allclose(out[:, :m], expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * 10)
        assert np.isnan(out[:, m:]).all(), "a masked block wrote past its pixels"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matrix_product_overwrites_the_first_count_columns(rng, dtype):
    for rows, depth, count in _sizes(rng, 12):
        a = rng.standard_normal((rows, depth)).astype(dtype)
        b = rng.standard_normal((depth, count + 3)).astype(dtype)
        out = np.full((rows, count + 3), np.nan, dtype)
        products.matrix_product(a, b, count, out)
        np.testing.assert_allclose(out[:, :count], a.astype(np.float64) @ b[:, :count],
                                   rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * 10)
        assert np.isnan(out[:, count:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_dots_adds_dot_products_of_runs(rng, dtype):
    for _ in range(12):
        rows, depth, m = int(rng.integers(1, 11)), int(rng.integers(1, 11)), int(rng.choice([1, 7, 16, 33, 100]))
        a_start, a_stride = int(rng.integers(0, 5)), m + int(rng.integers(0, 4))
        a = rng.standard_normal(a_start + rows * a_stride + 1).astype(dtype)
        b = rng.standard_normal(4 * depth + m + 8).astype(dtype)
        offsets = rng.integers(0, 4 * depth, size=depth).astype(np.int64)
        shift = np.int64(rng.integers(0, 8))
        out = rng.standard_normal((-(-rows // 4) * 4, depth)).astype(dtype)
        a_rows = np.stack([a[a_start + i * a_stride:a_start + i * a_stride + m] for i in range(rows)]).astype(np.float64)
        b_rows = np.stack([b[o + shift:o + shift + m] for o in offsets]).astype(np.float64)
        expected = out[:rows] + a_rows @ b_rows.T
        products.row_dots(a, np.int64(a_start), np.int64(a_stride), rows, b, offsets, shift, m, out)
        np.testing.assert_allclose(out[:rows], expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * 10)


def test_products_read_the_rows_of_strided_views(rng):
    """``a`` a column slice (a panel of taps), ``out`` a row-strided view: each row's start is used."""
    a = rng.standard_normal((8, 40))[:, 5:30]
    out = np.zeros((8, 90))[:, :70]
    b = rng.standard_normal((25, 80))
    products.matrix_product(a, b, 70, out)
    np.testing.assert_allclose(out, a @ b[:, :70], rtol=1e-12)


def test_vector_width_follows_the_compile_target(monkeypatch):
    monkeypatch.setattr(blocks.config, "CPU_FEATURES", "+avx,+avx2,+fma,-avx512f")
    assert blocks._vector_bytes() == 32
    monkeypatch.setattr(blocks.config, "CPU_FEATURES", "+avx2,+fma,+avx512f")
    assert blocks._vector_bytes() == 64


AVX2_CHECK = """
import numpy as np
from cnnrun.plugins.products import blocks, cpu
assert blocks.VECTOR_BYTES == 32 and blocks.BLOCK_VECTORS == 2 and blocks.NARROW_ROWS == 8
rng = np.random.default_rng(3)
for m in (5, 8, 16, 37, 100):
    a, b = rng.standard_normal((12, 21)).astype(np.float32), rng.standard_normal((21, m)).astype(np.float32)
    out = np.empty((12, m), np.float32)
    cpu.matrix_product(a, b, m, out)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    x, y = rng.standard_normal((8, m)).astype(np.float32), rng.standard_normal((8, m)).astype(np.float32)
    dots = np.zeros((8, 8), np.float32)
    cpu.row_dots(x.reshape(-1), np.int64(0), np.int64(m), 8, y.reshape(-1), np.arange(8) * m, np.int64(0), m, dots)
    np.testing.assert_allclose(dots, x.astype(np.float64) @ y.T, rtol=1e-4, atol=1e-4)
print("ok")
"""


def test_avx2_hosts_get_256_bit_blocks_that_compute_the_same(tmp_path):
    """Compiled for a Haswell (AVX2, no AVX-512) in a fresh process: 2 vectors of 8 lanes a block."""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="+avx,+avx2,+fma,+f16c,+popcnt,+sse4.2",
               NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", AVX2_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
