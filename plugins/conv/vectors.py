"""Short rows in vectors, written in LLVM IR (Numba intrinsics) as
:mod:`cnnrun.plugins.products.blocks` writes the products: Winograd's F(2x2, 3x3) tile transforms
(:mod:`.winograd`) and the rows of a depthwise 3x3 conv (:mod:`.depthwise_3x3`).

Their rows are as short as the maps are narrow (4-16 tiles or outputs on ResNet-20's and
MobileNet's 4x4-32x32 maps) and read every other column at stride 2, so the same loops in Numba
stay scalar (LLVM vectorizes a loop of at least 32 iterations, and strided reads as gathers):
about 1.4 ns a Winograd tile and channel, 16 values (Emerald Rapids), which made the transforms
three quarters of a Winograd conv. Here one vector of tiles or outputs is loaded at a time (masked:
no memory past a row, or outside the plane, is touched; zeros there), every other column picked by
shuffles, and the results stored with masks:

- :func:`input_tiles`: ``V[4*xi + nu, t] = (B^T d B)[xi, nu]`` for the tiles of one tile row, d
  read straight from four rows of the input plane (zero outside it); :func:`channel_tiles` the
  same for one tile of a channels-last image, a vector of channels at a time;
- :func:`output_tiles`: ``y = bias + A^T M A`` into the two output rows of a tile row;
- :func:`gradient_tiles`: ``dM = A dY A^T`` of the 2x2 tiles of two rows of an output gradient;
- :func:`depthwise_row`: one row of a depthwise 3x3 conv at stride 1 or 2, any dilation, straight
  from three input rows (no padded copy); :func:`channel_taps_3x3` four outputs of one along the
  channels of a channels-last image;
- :func:`strided_row` and :func:`add_strided_row`: im2col's copy of a row of taps out of an input
  row and col2im's sum back into it (:mod:`.im2col`), every ``stride``-th column;
- :func:`transposed_block`: a block of up to one vector of rows by one vector of columns,
  transposed in registers (the channels-last copies of :mod:`.direct`).
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from cnnrun.plugins.products.blocks import (I32, I64, VECTOR_BYTES, fma_intrinsic, lane_indices, masked_intrinsics,
                                            prefer_wide_vectors, splat)


class _Vectors:
    """What the kernels below share: the vector type of the array's dtype, masked loads and stores,
    the shuffles that split and join even and odd columns, the loop over a row a vector at a time."""

    def __init__(self, context, builder, array_type):
        prefer_wide_vectors(builder.function)
        self.builder = builder
        element = context.get_value_type(array_type.dtype)
        self.itemsize = context.get_abi_sizeof(element)
        self.lanes = VECTOR_BYTES // self.itemsize
        self.vector = ir.VectorType(element, self.lanes)
        self.zero = ir.Constant(self.vector, [0.0] * self.lanes)
        self.align = ir.Constant(I32, self.itemsize)
        self.index = lane_indices(self.lanes)
        self._load, self._store = masked_intrinsics(builder.module, self.vector, self.itemsize)

    def at(self, data, offset):
        """A vector pointer ``offset`` (an int64 value) elements after ``data``."""
        return self.builder.bitcast(self.builder.gep(data, [offset]), self.vector.as_pointer())

    def load(self, data, offset, mask):
        return self.builder.call(self._load, [self.at(data, offset), self.align, mask, self.zero])

    def store(self, value, data, offset, mask):
        self.builder.call(self._store, [value, self.at(data, offset), self.align, mask])

    def below(self, limit, shift=0):
        """The mask of lanes ``l`` with ``l + shift < limit`` (an int64 value)."""
        return self._compare("<", limit, shift)

    def between(self, low, high, shift):
        """The mask of lanes ``l`` with ``low <= l + shift < high``."""
        return self.builder.and_(self._compare(">=", low, shift), self._compare("<", high, shift))

    def _compare(self, operator, limit, shift):
        limit = splat(self.builder, self.builder.sub(limit, _int(shift)), self.lanes)
        return self.builder.icmp_signed(operator, self.index, limit)

    def split(self, low, high):
        """(even, odd) lanes of the 2 * lanes values ``low``, ``high``."""
        lanes = self.lanes
        pick = [ir.Constant(ir.VectorType(I32, lanes), list(range(start, 2 * lanes, 2))) for start in (0, 1)]
        return tuple(self.builder.shuffle_vector(low, high, p) for p in pick)

    def join(self, even, odd):
        """(low, high): ``even`` and ``odd`` interleaved, ``even[0], odd[0], even[1], ...``."""
        lanes = self.lanes
        order = [i // 2 + (i % 2) * lanes for i in range(2 * lanes)]
        return tuple(self.builder.shuffle_vector(even, odd, ir.Constant(ir.VectorType(I32, lanes), order[h:h + lanes]))
                     for h in (0, lanes))

    def chunks(self, count):
        """A loop over ``count`` tiles or outputs in steps of one vector: yields the first of each."""
        return cgutils.for_range_slice(self.builder, _int(0), count, _int(self.lanes))


def _int(value):
    return ir.Constant(I64, value)


def _ints(context, builder, signature, args, indices):
    return [context.cast(builder, args[i], signature.args[i], types.int64) for i in indices]


def _data(context, builder, signature, args, index):
    return context.make_array(signature.args[index])(context, builder, args[index]).data


@intrinsic
def input_tiles(typingctx, x, row0, row1, row2, row3, rows_inside, width, column, v, first, k_stride, tiles):
    """``v[first + k*k_stride + t] = (B^T d B)[k // 4, k % 4]`` for k < 16, t < tiles, d the 4x4 tile
    of x's rows starting ``row0..row3`` elements into x (row a read only where bit a of
    ``rows_inside`` is set, else zero) at columns ``column + 2t + (0..3)`` (zero outside
    ``[0, width)``); the rows' columns are transformed first (B), then the rows (B^T)."""
    def codegen(context, builder, signature, args):
        s = _Vectors(context, builder, signature.args[0])
        x_data, v_data = _data(context, builder, signature, args, 0), _data(context, builder, signature, args, 8)
        rows = _ints(context, builder, signature, args, (1, 2, 3, 4))
        inside, width, column, first, k_stride, tiles = _ints(context, builder, signature, args, (5, 6, 7, 9, 10, 11))
        lanes = s.lanes
        with s.chunks(tiles) as (t0, _):
            start = builder.add(column, builder.mul(t0, _int(2)))  # the chunk's first column
            left_edge, right_edge = builder.sub(_int(0), start), builder.sub(width, start)  # the plane's lanes
            masks = [s.between(left_edge, right_edge, shift) for shift in (0, lanes, 2, lanes + 2)]
            d = []  # the tile's rows: columns 2t + (0, 1, 2, 3) of each input row
            for a, row in enumerate(rows):
                row_inside = builder.icmp_signed("!=", builder.and_(inside, _int(1 << a)), _int(0))
                base = builder.add(row, start)
                low, high, low2, high2 = (
                    s.load(x_data, builder.add(base, _int(shift)), builder.and_(mask, splat(builder, row_inside, lanes)))
                    for shift, mask in zip((0, lanes, 2, lanes + 2), masks))
                (even, odd), (even2, odd2) = s.split(low, high), s.split(low2, high2)
                d.append((even, odd, even2, odd2))
            store_mask = s.below(builder.sub(tiles, t0))
            for k, value in enumerate(_b_t_d_b(builder, d)):
                offset = builder.add(builder.add(first, builder.mul(_int(k), k_stride)), t0)
                s.store(value, v_data, offset, store_mask)
        return context.get_dummy_value()

    return types.none(x, row0, row1, row2, row3, rows_inside, width, column, v, first, k_stride, tiles), codegen


def _b_t_d_b(builder, d):
    """The 16 values ``(B^T d B)[xi, nu]`` (k = 4*xi + nu order) of the 4x4 tile ``d`` (rows of 4
    vectors): the columns first, ``(d0 - d2, d1 + d2, d2 - d1, d1 - d3)``, then the rows."""
    columns = [(builder.fsub(r[0], r[2]), builder.fadd(r[1], r[2]), builder.fsub(r[2], r[1]), builder.fsub(r[1], r[3]))
               for r in d]
    values = [None] * 16
    for nu in range(4):
        d0, d1, d2, d3 = (columns[a][nu] for a in range(4))
        for xi, value in enumerate((builder.fsub(d0, d2), builder.fadd(d1, d2), builder.fsub(d2, d1),
                                    builder.fsub(d1, d3))):
            values[4 * xi + nu] = value
    return values


@intrinsic
def channel_tiles(typingctx, image, corner, row_stride, column_stride, channels, v, first, k_stride):
    """``v[first + k*k_stride + c] = (B^T d B)[k // 4, k % 4]`` for k < 16, c < channels, d the 4x4
    tile ``image[corner + a*row_stride + b*column_stride + c]`` of a channels-last image (the
    channels of a pixel contiguous): a vector of channels at a time, the sums of :func:`input_tiles`."""
    def codegen(context, builder, signature, args):
        s = _Vectors(context, builder, signature.args[0])
        image_data, v_data = _data(context, builder, signature, args, 0), _data(context, builder, signature, args, 5)
        corner, row_stride, column_stride, channels, first, k_stride = _ints(context, builder, signature, args,
                                                                             (1, 2, 3, 4, 6, 7))
        with s.chunks(channels) as (c0, _):
            mask = s.below(builder.sub(channels, c0))
            start = builder.add(corner, c0)
            d = [[s.load(image_data, builder.add(start, builder.add(builder.mul(_int(a), row_stride),
                                                                    builder.mul(_int(b), column_stride))), mask)
                  for b in range(4)] for a in range(4)]
            for k, value in enumerate(_b_t_d_b(builder, d)):
                s.store(value, v_data, builder.add(builder.add(first, builder.mul(_int(k), k_stride)), c0), mask)
        return context.get_dummy_value()

    return types.none(image, corner, row_stride, column_stride, channels, v, first, k_stride), codegen


@intrinsic
def channel_taps_3x3(typingctx, image, corner, row_stride, column_stride, step, pixels, taps, base, out, out_first,
                     channels):
    """``out[out_first + p*channels + c] = base[c] + sum_{ki, kj} taps[(3*ki + kj)*channels + c] *
    image[corner + p*step + ki*row_stride + kj*column_stride + c]`` for p < pixels (at most 4), c <
    channels: a depthwise 3x3 conv along the channels of a channels-last image, a vector of channels
    at a time, the nine taps' vectors loaded once for the four pixels, whose sums run as four
    independent chains of fused multiply-adds."""
    def codegen(context, builder, signature, args):
        s = _Vectors(context, builder, signature.args[0])
        image_data, taps_data = _data(context, builder, signature, args, 0), _data(context, builder, signature, args, 6)
        base_data, out_data = _data(context, builder, signature, args, 7), _data(context, builder, signature, args, 8)
        corner, row_stride, column_stride, step, pixels, out_first, channels = _ints(
            context, builder, signature, args, (1, 2, 3, 4, 5, 9, 10))
        fma = fma_intrinsic(builder.module, s.vector, s.itemsize)
        with s.chunks(channels) as (c0, _):
            mask = s.below(builder.sub(channels, c0))
            weights = [s.load(taps_data, builder.add(builder.mul(_int(k), channels), c0), mask) for k in range(9)]
            first = s.load(base_data, c0, mask)
            masks = [builder.and_(mask, splat(builder, builder.icmp_signed("<", _int(p), pixels), s.lanes))
                     for p in range(4)]
            starts = [builder.add(builder.add(corner, builder.mul(_int(p), step)), c0) for p in range(4)]
            sums = [first] * 4
            for k in range(9):
                shift = builder.add(builder.mul(_int(k // 3), row_stride), builder.mul(_int(k % 3), column_stride))
                for p in range(4):
                    value = s.load(image_data, builder.add(starts[p], shift), masks[p])
                    sums[p] = builder.call(fma, [weights[k], value, sums[p]])
            for p in range(4):
                s.store(sums[p], out_data, builder.add(builder.add(out_first, builder.mul(_int(p), channels)), c0),
                        masks[p])
        return context.get_dummy_value()

    return (types.none(image, corner, row_stride, column_stride, step, pixels, taps, base, out, out_first, channels),
            codegen)


@intrinsic
def output_tiles(typingctx, mm, first, k_stride, y, row0, row1, rows, width, bias, tiles):
    """``y[row_i + 2t + j] = bias + (A^T M A)[i, j]`` for i < rows (1 or 2), j < 2, 2t + j < width,
    t < tiles, M the 16 values ``mm[first + k*k_stride + t]`` as a 4x4 tile; the sums in the order
    ``((bias + s0) + s1) + s2`` and ``((bias + s1) - s2) - s3`` of the columns s of A^T M."""
    def codegen(context, builder, signature, args):
        s = _Vectors(context, builder, signature.args[0])
        m_data, y_data = _data(context, builder, signature, args, 0), _data(context, builder, signature, args, 3)
        first, k_stride, row0, row1, rows, width, tiles = _ints(context, builder, signature, args, (1, 2, 4, 5, 6, 7, 9))
        bias = splat(builder, context.cast(builder, args[8], signature.args[8], signature.args[0].dtype), s.lanes)
        with s.chunks(tiles) as (t0, _):
            load_mask = s.below(builder.sub(tiles, t0))
            m = [s.load(m_data, builder.add(builder.add(first, builder.mul(_int(k), k_stride)), t0), load_mask)
                 for k in range(16)]
            columns_left = builder.sub(width, builder.mul(t0, _int(2)))
            for i, row in enumerate((row0, row1)):
                with builder.if_then(builder.icmp_signed("<", _int(i), rows)):
                    if i == 0:
                        terms = [builder.fadd(builder.fadd(m[b], m[4 + b]), m[8 + b]) for b in range(4)]
                    else:
                        terms = [builder.fsub(builder.fsub(m[4 + b], m[8 + b]), m[12 + b]) for b in range(4)]
                    s0, s1, s2, s3 = terms
                    even = builder.fadd(builder.fadd(builder.fadd(bias, s0), s1), s2)
                    odd = builder.fsub(builder.fsub(builder.fadd(bias, s1), s2), s3)
                    start = builder.add(row, builder.mul(t0, _int(2)))
                    for h, value in enumerate(s.join(even, odd)):
                        s.store(value, y_data, builder.add(start, _int(h * s.lanes)),
                                s.below(columns_left, h * s.lanes))
        return context.get_dummy_value()

    return types.none(mm, first, k_stride, y, row0, row1, rows, width, bias, tiles), codegen


@intrinsic
def gradient_tiles(typingctx, grad, row0, row1, rows, width, mm, first, k_stride, tiles):
    """``mm[first + k*k_stride + t] = (A dY A^T)[k // 4, k % 4]`` for k < 16, t < tiles, dY the 2x2
    tile of grad's rows starting ``row0``, ``row1`` elements into grad (row 1 zero unless ``rows``
    is 2) at columns ``2t, 2t + 1`` (zero from ``width`` on): A's rows are (1, 0), (1, 1), (1, -1),
    (0, -1)."""
    def codegen(context, builder, signature, args):
        s = _Vectors(context, builder, signature.args[0])
        g_data, m_data = _data(context, builder, signature, args, 0), _data(context, builder, signature, args, 5)
        row0, row1, rows, width, first, k_stride, tiles = _ints(context, builder, signature, args, (1, 2, 3, 4, 6, 7, 8))
        lanes = s.lanes
        second = splat(builder, builder.icmp_signed(">", rows, _int(1)), lanes)
        with s.chunks(tiles) as (t0, _):
            start = builder.mul(t0, _int(2))
            columns_left = builder.sub(width, start)
            masks = [s.below(columns_left, shift) for shift in (0, lanes)]
            combined = []  # per row of dY: its columns through A (dY A^T)
            for row, inside in ((row0, None), (row1, second)):
                low, high = (s.load(g_data, builder.add(builder.add(row, start), _int(h * lanes)),
                                    mask if inside is None else builder.and_(mask, inside))
                             for h, mask in zip((0, 1), masks))
                d0, d1 = s.split(low, high)
                combined.append((d0, builder.fadd(d0, d1), builder.fsub(d0, d1), builder.fsub(s.zero, d1)))
            store_mask = s.below(builder.sub(tiles, t0))
            for nu in range(4):
                r0, r1 = combined[0][nu], combined[1][nu]
                for xi, value in enumerate((r0, builder.fadd(r0, r1), builder.fsub(r0, r1), builder.fsub(s.zero, r1))):
                    offset = builder.add(builder.add(first, builder.mul(_int(4 * xi + nu), k_stride)), t0)
                    s.store(value, m_data, offset, store_mask)
        return context.get_dummy_value()

    return types.none(grad, row0, row1, rows, width, mm, first, k_stride, tiles), codegen


@intrinsic
def depthwise_row(typingctx, x, row0, row1, row2, rows_inside, width, column, stride, dilation, w, w_first, bias, y,
                  y_first, count):
    """``y[y_first + j] = bias + sum_{ki, kj} w[w_first + 3*ki + kj] * x[row_ki + column + j*stride +
    kj*dilation]`` for j < count, stride 1 or 2; row ki read only where bit ki of ``rows_inside``
    is set and columns only inside ``[0, width)`` (zero elsewhere: the conv's padding). The sum in
    the order of the taps, ``bias`` first, one fused multiply-add each."""
    def codegen(context, builder, signature, args):
        s = _Vectors(context, builder, signature.args[0])
        x_data, w_data, y_data = (_data(context, builder, signature, args, i) for i in (0, 9, 12))
        rows = _ints(context, builder, signature, args, (1, 2, 3))
        inside, width, column, stride, dilation, w_first, y_first, count = _ints(
            context, builder, signature, args, (4, 5, 6, 7, 8, 10, 13, 14))
        dtype = signature.args[0].dtype
        bias = splat(builder, context.cast(builder, args[11], signature.args[11], dtype), s.lanes)
        weights = [splat(builder, builder.load(builder.gep(w_data, [builder.add(w_first, _int(k))])), s.lanes)
                   for k in range(9)]
        fma = fma_intrinsic(builder.module, s.vector, s.itemsize)
        lanes = s.lanes
        inside_rows = [splat(builder, builder.icmp_signed("!=", builder.and_(inside, _int(1 << ki)), _int(0)), lanes)
                       for ki in range(3)]

        def row_of_outputs(step):  # the loop for stride ``step`` (1 or 2)
            with s.chunks(count) as (j0, _):
                start = builder.add(column, builder.mul(j0, _int(step)))  # the chunk's first column, kj = 0
                acc = bias
                for ki, row in enumerate(rows):
                    for kj in range(3):
                        first = builder.add(start, builder.mul(_int(kj), dilation))
                        low, high = builder.sub(_int(0), first), builder.sub(width, first)  # the row's lanes

                        def load(shift):
                            mask = builder.and_(s.between(low, high, shift), inside_rows[ki])
                            return s.load(x_data, builder.add(builder.add(row, first), _int(shift)), mask)

                        value = load(0) if step == 1 else s.split(load(0), load(lanes))[0]
                        acc = builder.call(fma, [weights[3 * ki + kj], value, acc])
                s.store(acc, y_data, builder.add(y_first, j0), s.below(builder.sub(count, j0)))

        with builder.if_else(builder.icmp_signed("==", stride, _int(2))) as (two, one):
            with two:
                row_of_outputs(2)
            with one:
                row_of_outputs(1)
        return context.get_dummy_value()

    return (types.none(x, row0, row1, row2, rows_inside, width, column, stride, dilation, w, w_first, bias, y,
                       y_first, count), codegen)


def _strided(s, builder, data, offset, stride, inside, width, column):
    """(values, mask): ``data[offset + column + l*stride]`` for the lanes l of one vector where
    ``inside`` (an i1 vector) and ``0 <= column + l*stride < width`` (zero elsewhere); stride 1 or 2,
    the mask over the ``stride * lanes`` columns loaded (for a store back), one or two vectors."""
    lanes = s.lanes
    masks = [builder.and_(s.between(builder.sub(_int(0), column), builder.sub(width, column), shift), inside)
             for shift in (0, lanes)]
    base = builder.add(offset, column)
    low = s.load(data, base, masks[0])
    if stride == 1:
        return low, masks[:1]
    high = s.load(data, builder.add(base, _int(lanes)), masks[1])
    return (low, high), masks


def _by_stride(builder, stride, vectors, one_at_a_time):
    """Emit ``vectors(1)`` at stride 1, ``vectors(2)`` at stride 2, ``one_at_a_time()`` at others."""
    with builder.if_else(builder.icmp_signed("<=", stride, _int(2))) as (short, long):
        with short:
            with builder.if_else(builder.icmp_signed("==", stride, _int(1))) as (one, two):
                with one:
                    vectors(1)
                with two:
                    vectors(2)
        with long:
            one_at_a_time()


@intrinsic
def strided_row(typingctx, x, row, row_inside, width, column, stride, out, out_first, count):
    """``out[out_first + j] = x[row + column + j*stride]`` for j < count, zero where ``row_inside`` is
    0 or the column is outside ``[0, width)``; a vector at a time at stride 1 and 2 (every other
    column picked by a shuffle), one value at a time at larger strides."""
    def codegen(context, builder, signature, args):
        s = _Vectors(context, builder, signature.args[0])
        x_data, out_data = _data(context, builder, signature, args, 0), _data(context, builder, signature, args, 6)
        row, inside, width, column, stride, out_first, count = _ints(context, builder, signature, args,
                                                                     (1, 2, 3, 4, 5, 7, 8))
        lanes, row_inside = s.lanes, builder.icmp_signed("!=", inside, _int(0))
        inside_lanes = splat(builder, row_inside, lanes)

        def vectors(step):
            with s.chunks(count) as (j0, _):
                first = builder.add(column, builder.mul(j0, _int(step)))
                values, _ = _strided(s, builder, x_data, row, step, inside_lanes, width, first)
                value = values if step == 1 else s.split(*values)[0]
                s.store(value, out_data, builder.add(out_first, j0), s.below(builder.sub(count, j0)))

        def one_at_a_time():
            with cgutils.for_range(builder, count) as loop:
                at = builder.add(column, builder.mul(loop.index, stride))
                valid = builder.and_(row_inside, builder.and_(builder.icmp_signed(">=", at, _int(0)),
                                                              builder.icmp_signed("<", at, width)))
                target = builder.gep(out_data, [builder.add(out_first, loop.index)])
                builder.store(ir.Constant(s.vector.element, 0.0), target)
                with builder.if_then(valid):
                    builder.store(builder.load(builder.gep(x_data, [builder.add(row, at)])), target)

        _by_stride(builder, stride, vectors, one_at_a_time)
        return context.get_dummy_value()

    return types.none(x, row, row_inside, width, column, stride, out, out_first, count), codegen


@intrinsic
def add_strided_row(typingctx, col, col_first, count, x, row, width, column, stride):
    """``x[row + column + j*stride] += col[col_first + j]`` for j < count where the column is inside
    ``[0, width)`` (the transpose of :func:`strided_row` on a row inside the plane); at stride 2 the
    odd columns between are stored back unchanged, so ``x``'s row must be no other thread's."""
    def codegen(context, builder, signature, args):
        s = _Vectors(context, builder, signature.args[3])
        col_data, x_data = _data(context, builder, signature, args, 0), _data(context, builder, signature, args, 3)
        col_first, count, row, width, column, stride = _ints(context, builder, signature, args, (1, 2, 4, 5, 6, 7))
        every = splat(builder, ir.Constant(ir.IntType(1), 1), s.lanes)

        def vectors(step):
            with s.chunks(count) as (j0, _):
                first = builder.add(column, builder.mul(j0, _int(step)))
                taken = s.below(builder.sub(count, j0))
                added = s.load(col_data, builder.add(col_first, j0), taken)
                values, masks = _strided(s, builder, x_data, row, step, every, width, first)
                base = builder.add(row, first)
                if step == 1:
                    s.store(builder.fadd(values, added), x_data, base, builder.and_(masks[0], taken))
                else:  # the even lanes past count and the odd ones stored back as they were
                    even, odd = s.split(*values)
                    even = builder.select(taken, builder.fadd(even, added), even)
                    for h, value in enumerate(s.join(even, odd)):
                        s.store(value, x_data, builder.add(base, _int(h * s.lanes)), masks[h])

        def one_at_a_time():
            with cgutils.for_range(builder, count) as loop:
                at = builder.add(column, builder.mul(loop.index, stride))
                valid = builder.and_(builder.icmp_signed(">=", at, _int(0)), builder.icmp_signed("<", at, width))
                with builder.if_then(valid):
                    target = builder.gep(x_data, [builder.add(row, at)])
                    value = builder.load(builder.gep(col_data, [builder.add(col_first, loop.index)]))
                    builder.store(builder.fadd(builder.load(target), value), target)

        _by_stride(builder, stride, vectors, one_at_a_time)
        return context.get_dummy_value()

    return types.none(col, col_first, count, x, row, width, column, stride), codegen


@intrinsic
def transposed_block(typingctx, x, x_first, x_stride, rows, out, out_first, out_stride, cols):
    """``out[out_first + j*out_stride + i] = x[x_first + i*x_stride + j]`` for i < rows, j < cols,
    both at most one vector: the rows loaded (masked to ``cols``), transposed in registers by
    log2(lanes) rounds of shuffles (each swaps the off-diagonal blocks of size d = lanes/2, ..., 1),
    the columns stored (masked to ``rows``)."""
    def codegen(context, builder, signature, args):
        s = _Vectors(context, builder, signature.args[0])
        x_data, out_data = _data(context, builder, signature, args, 0), _data(context, builder, signature, args, 4)
        x_first, x_stride, rows, out_first, out_stride, cols = _ints(context, builder, signature, args,
                                                                     (1, 2, 3, 5, 6, 7))
        lanes = s.lanes
        column_mask, row_mask = s.below(cols), s.below(rows)
        vectors = []
        for i in range(lanes):
            slot = cgutils.alloca_once_value(builder, s.zero)
            with builder.if_then(builder.icmp_signed("<", _int(i), rows)):
                start = builder.add(x_first, builder.mul(_int(i), x_stride))
                builder.store(s.load(x_data, start, column_mask), slot)
            vectors.append(builder.load(slot))
        d = lanes // 2
        while d:
            low = [l if l & d == 0 else lanes + l - d for l in range(lanes)]
            high = [l + d if l & d == 0 else lanes + l for l in range(lanes)]
            for i in range(lanes):
                if i & d == 0:
                    a, b = vectors[i], vectors[i + d]
                    vectors[i], vectors[i + d] = (builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(I32, lanes),
                                                                                           order))
                                                  for order in (low, high))
            d //= 2
        for j in range(lanes):
            with builder.if_then(builder.icmp_signed("<", _int(j), cols)):
                s.store(vectors[j], out_data, builder.add(out_first, builder.mul(_int(j), out_stride)), row_mask)
        return context.get_dummy_value()

    return types.none(x, x_first, x_stride, rows, out, out_first, out_stride, cols), codegen


@intrinsic
def vector_lanes(typingctx, x):
    """The lanes of one vector of ``x``'s dtype (a constant): the block size of :func:`transposed_block`."""
    def codegen(context, builder, signature, args):
        element = context.get_value_type(signature.args[0].dtype)
        return ir.Constant(I64, VECTOR_BYTES // context.get_abi_sizeof(element))

    return types.int64(x), codegen
