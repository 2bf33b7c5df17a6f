"""Which product a CPU conv takes (:mod:`.cpu` runs them): the paths, the ``algorithm`` argument,
and the thresholds between them, each with the measurements that set it."""

from __future__ import annotations

from cnnrun.engine.errors import CnnrunError
from cnnrun.plugins.common import Geometry

from . import winograd

ALGORITHMS = ("im2col", "direct")
"""The paths the ``algorithm`` argument can force (``None``: the best for the shape, see :func:`choose_path`)."""

PATCH_MIN_TAPS = 256
"""Convs with at least this many taps per output (C/G*kh*kw) and a kernel larger than 1x1 take
channels-last patches for their weight gradient (:func:`.direct.patch_weight`); others im2col's or
shifted rows' dot products. Measured (1 thread, Emerald Rapids, 2026-12-02): 32->64 3x3 stride 2
on 16x16, batch 128, 9.5-10.6 -> 3.9-4.4 ms; (g) 64->64 3x3 stride 2 on 56x56, batch 32, 33-37 ->
24-26; 64->64 3x3 dilation 2 on 28x28, batch 16, 13.7 -> 9.2-10.2; 32->32 5x5 on 16x16, batch 32,
6.3-8.3 -> 4.6-5.8; even at 144 taps (16->32 3x3 stride 2), 2.4x slower for a 1x1 stride-2 conv
of 16 channels."""

PATCH_FORWARD_MIN_TAPS = 2048
"""Strided convs with at least this many taps take channels-last patches for their forward product
too, the others im2col; stride-1 convs shifted rows. Since im2col's rows of taps are vectors
(forward, 1 thread, Emerald Rapids, 2026-12-02), patches against im2col at stride 2: 256->256 on
14x14 (2304 taps), batch 16, 19.1 against 21.6 ms; 128->128 on 28x28 (1152) even; (g) (576) 36.3
against 28.4; 32->64 on 64x64 (288), batch 16, 13.5 against 8.6; against shifted rows at stride 1:
512->512 3x3 on 7x7, batch 8, 43.9 against 30.5; 32->32 5x5 on 16x16 8.6 against 6.4 (the
patches' dot products sum across lanes for every 4 x 3 block; shifted rows and im2col run along
the pixels in registers)."""

PATCH_MIN_ROWS = 16
"""... and at least this many output channels per group share each copied patch. A stride-1
transpose with fewer rows (input channels per group) runs as the adjoint of shifted rows: the
rotated filter's rows, padded to 4, and its wider padded planes would waste more."""

POINTWISE_MAX_PIXELS = 49
"""1x1 stride-1 convs (no padding, one group) with at most this many output pixels per sample take
channels-last dot products (:func:`.cpu._pointwise`), all three products; larger maps take shifted rows.
Measured (float32, 1 thread): the forward 2-4.5x faster at 2x2 to 7x7 from 128 channels (512->512
at 2x2: 6.8x, 256->256 at 4x4: 2.8x, at 6x6: 2.2x, 512->512 at 7x7: 2.6x; batch 16, 256->256 at
4x4: 3x), the same below 64 channels (overhead); slower from 8x8 with 128 channels (batch 16:
0.9x) and at 16x16 (0.75x). The weight gradient, batch 16: 512->512 at 2x2: 8.6x, 256->256 at
4x4: 3.3x, 128->128 at 7x7: 1.4x, 64->64 at 7x7 and 32->32 at 4x4: 1.0x, 256->64 at 16x16: 0.6x.
Larger maps with many channels took it too, until the shifted rows' register blocks (Emerald
Rapids, 2026-12-02, batch 16, forward / backward: 256->256 at 8x8 2.1 / 7.9 ms by dot products,
1.0 / 4.7 by shifted rows; 512->512 at 14x14, batch 4, 6.8 / 19.3 against 3.7 / 16.6). Left here:
at 6x6-7x7 the forward alone is faster by shifted rows (512->512, batch 8: 1.6-2.0 against 1.9-3.1
ms), the backward by dot products (8.8-10.1 against 6.0-7.7)."""

POINTWISE_WEIGHT_MAX_PIXELS = 64
"""The weight gradient alone takes :func:`.cpu._pointwise`'s channels-last products up to this many
pixels (its forward and input gradient stay at POINTWISE_MAX_PIXELS): batch 16, Emerald Rapids,
1 thread: 256->256 at 8x8 1.8-2.7 ms against 3.5-4.8 by shifted rows' dot products (summed across
lanes every 64 pixels), 128->128 0.74-0.81 against 1.14-1.26; about even at 10x10-16x16 (the
channels-last copy), slower at 32x32 and 64x64 (64->64: 3.2 against 2.3 ms)."""


DEPTHWISE_ROWS_MAX_WIDTH = 16
"""Depthwise 3x3 convs at column stride 1 with outputs at most this wide, and all at stride 2, take
:func:`.depthwise_3x3.depthwise_rows_3x3` (rows in vectors, straight from x); the others the padded
planes' loops. Measured (Emerald Rapids, float32, batch 16, 1 thread, forward), rows against planes:
stride 1 512 channels at 4x4 1.9x, 256 at 8x8 1.4x, 128 at 16x16 1.5x, 64 at 32x32 0.97x, 16 at
64x64 0.76x (long rows vectorize in Numba too, without masks); stride 2 1.6-2.1x."""


DEPTHWISE_CHANNELS_LAST_MAX_WIDTH = 8
DEPTHWISE_CHANNELS_LAST_MIN_BATCH = 4
"""Depthwise 3x3 convs with one output channel per input channel, outputs at most
DEPTHWISE_CHANNELS_LAST_MAX_WIDTH wide and at least DEPTHWISE_CHANNELS_LAST_MIN_BATCH samples take
:func:`.depthwise_3x3.depthwise_channels_last_3x3` (vectors along the channels of each sample's
channels-last copy; parallel over the samples). Measured inside MobileNet-v1's inference (Ice
Lake, 1 thread, CPU time, medians, channels-last / rows): batch 16, 256 channels on 8x8 0.69-0.78,
8x8 stride 2 0.51, 512 on 4x4 0.43, 128 on 16x16 stride 2 0.79; 128 on 16x16 stride 1 (16 wide)
1.00, 32x32 and 64x64 0.93-1.06; batch 4 0.90-1.01 on 8x8, 0.64 at stride 2 and on 4x4; batch 1
0.87-1.39 (a single sample, one thread's work). Alone, hot in cache: 0.33-0.65 at batch 16."""


def depthwise_layout(channels: int, out_channels: int, y, geom: Geometry) -> str:
    """How a depthwise 3x3 forward runs: "channels_last" (one output channel per input channel, see
    DEPTHWISE_CHANNELS_LAST_MAX_WIDTH), "rows" (column stride 1 and outputs at most
    DEPTHWISE_ROWS_MAX_WIDTH wide, or column stride 2) or "planes"."""
    if (channels == out_channels and y.shape[3] <= DEPTHWISE_CHANNELS_LAST_MAX_WIDTH
            and y.shape[0] >= DEPTHWISE_CHANNELS_LAST_MIN_BATCH):
        return "channels_last"
    if geom.stride[1] == 2 or (geom.stride[1] == 1 and y.shape[3] <= DEPTHWISE_ROWS_MAX_WIDTH):
        return "rows"
    return "planes"


def resolve_algorithm(algorithm, channels: int, out_channels: int, geom: Geometry, out_hw) -> str | None:
    """conv2d's ``algorithm`` option for this input: "auto" (or ``None``) becomes "winograd" where
    :func:`.winograd.choose_algorithm` picks it, else ``None`` (:func:`choose_path` chooses)."""
    if algorithm is None or algorithm == "auto":
        return winograd.choose_algorithm(channels, out_channels, geom, out_hw)
    return algorithm


def choose_path(weight_shape, geom: Geometry, algorithm=None) -> str:
    """The path of a conv with this weight ``(O, C/G, kh, kw)`` (see :mod:`.cpu`'s docstring):

    - "depthwise" (one input channel per group, several groups), whatever ``algorithm`` says;
    - "direct": no im2col buffer; the forward by shifted rows, the transpose the same with the
      rotated filter (or, with few input channels, as the adjoint of shifted rows), the weight
      gradient by shifted rows or, with many taps, channels-last patches. Stride 1 only; 1x1
      stride-1 convs always take it (a plain matrix product there: pointwise on small maps);
    - "im2col": im2col columns for all three products;
    - "strided" (``None`` at stride > 1): the weight gradient by channels-last patches when it has
      many taps, the forward when it has very many, everything else as "im2col".
    """
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise CnnrunError(f"unknown conv algorithm {algorithm!r}; expected one of: {', '.join(ALGORITHMS)}")
    if weight_shape[1] == 1 and geom.groups > 1:
        return "depthwise"
    stride_one = tuple(geom.stride) == (1, 1)
    if stride_one and tuple(geom.kernel) == (1, 1):
        return "direct"
    if algorithm == "direct" and not stride_one:
        raise CnnrunError(f"the direct conv algorithm needs stride 1; got stride={tuple(geom.stride)} "
                          f"(use \"im2col\")")
    if algorithm == "im2col":
        return "im2col"
    return "direct" if stride_one else "strided"


def many_taps(w, geom, least) -> bool:
    """Whether channels-last patches pay (PATCH_MIN_TAPS for the weight gradient,
    PATCH_FORWARD_MIN_TAPS for a strided forward): a kernel larger than 1x1 with at least ``least``
    taps per output and PATCH_MIN_ROWS outputs per group to share each patch."""
    return (w.shape[1] * geom.kernel[0] * geom.kernel[1] >= least and w.shape[0] // geom.groups >= PATCH_MIN_ROWS
            and tuple(geom.kernel) != (1, 1))


def pointwise_fits(w, geom, y, max_pixels=POINTWISE_MAX_PIXELS) -> bool:
    """Whether a conv takes :func:`.cpu._pointwise`: 1x1, no padding, one group and at most
    ``max_pixels`` output pixels per sample."""
    return (tuple(geom.kernel) == (1, 1) and tuple(geom.padding) == (0, 0) and geom.groups == 1
            and y.shape[2] * y.shape[3] <= max_pixels)
