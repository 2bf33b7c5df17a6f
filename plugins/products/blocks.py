"""The register blocks of :mod:`.cpu`'s products, written in LLVM IR (Numba intrinsics).

:func:`rows_block`: ``out[i:i+4, t:t+n] += a[i:i+4, :] @ rows``, row k of ``rows`` being
``src[offsets[k] + shift + t:]``: 4 output rows x ``BLOCK_VECTORS`` vectors of pixels are held in
registers over all of ``a``'s columns (taps); each tap loads ``BLOCK_VECTORS`` vectors of input and
broadcasts 4 weights into 4 x ``BLOCK_VECTORS`` fused multiply-adds (oneDNN's and BLIS's
micro-kernel shape). :func:`dots_block`: 4 x 4 dot products of runs, one vector accumulator each,
summed across lanes at the end. Numba's loops do not give these: LLVM vectorizes the pixel loop
but will not keep a block of outputs in registers across the tap loop, and on AVX-512 hosts it
prefers 256-bit vectors. Here the vector width is the widest the CPU Numba compiles for has
(:data:`VECTOR_BYTES`, read when a kernel is compiled; Numba's cache is keyed by CPU), and the
function holding a block is marked so that LLVM keeps 512-bit vectors in it. A block with fewer
than its width of pixels uses masked loads and stores, so it never touches memory past its run.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba.core import cgutils, config, types
from numba.extending import intrinsic


def _vector_bytes() -> int:
    """64 where the compile target has AVX-512F, else 32 (AVX2; SSE hosts split the vectors)."""
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else llvm.get_host_cpu_features().flatten()
    return 64 if "+avx512f" in features.split(",") else 32


VECTOR_BYTES = _vector_bytes()
BLOCK_VECTORS = 4 if VECTOR_BYTES == 64 else 2
"""Vectors of pixels per output row in a block: 4 x 4 accumulators of 32 zmm registers, 4 x 2 of 16 ymm."""

I32, I64 = ir.IntType(32), ir.IntType(64)


def prefer_wide_vectors(function: ir.Function) -> None:
    """Let LLVM keep 512-bit vectors in ``function`` (its default on AVX-512 parts is 256-bit). These
    are string attributes, which llvmlite's ``attributes.add`` does not list: added to the set as is."""
    if VECTOR_BYTES == 64:
        set.add(function.attributes, '"prefer-vector-width"="512"')
        set.add(function.attributes, '"min-legal-vector-width"="512"')


def _lanes(context, array_type) -> int:
    return VECTOR_BYTES // context.get_abi_sizeof(context.get_value_type(array_type.dtype))


@intrinsic
def block_width(typingctx, a):
    """Pixels one :func:`rows_block` covers for ``a``'s dtype: ``BLOCK_VECTORS`` vectors."""
    def codegen(context, builder, signature, args):
        return ir.Constant(I64, BLOCK_VECTORS * _lanes(context, signature.args[0]))
    return types.int64(a), codegen


NARROW_ROWS = 16 if VECTOR_BYTES == 64 else 8
"""Output rows of a :func:`narrow_block`: one vector of pixels each, so NARROW_ROWS accumulators
(32 zmm or 16 ymm registers). A run of at most one vector (Winograd's 16 tiles of an 8x8 map at
batch 1) in :func:`rows_block` has 4 accumulators, too few to hide the fused multiply-adds'
latency: 64 -> 64 channels on 8x8 maps, batch 1, ran its products at 41 GFLOP/s."""


@intrinsic
def narrow_rows(typingctx, a):
    """NARROW_ROWS, the rows one :func:`narrow_block` covers."""
    def codegen(context, builder, signature, args):
        return ir.Constant(I64, NARROW_ROWS)
    return types.int64(a), codegen


def _block_codegen(rows, max_vectors):
    def codegen(context, builder, signature, args):
        src_data = context.make_array(signature.args[2])(context, builder, args[2]).data
        offsets_data = context.make_array(signature.args[3])(context, builder, args[3]).data
        shift, start = (context.cast(builder, args[i], signature.args[i], types.int64) for i in (4, 5))
        base = builder.add(shift, start)

        def tap_row(tap):
            return builder.gep(src_data, [builder.add(builder.load(builder.gep(offsets_data, [tap])), base)])

        _emit(context, builder, signature, args, tap_row, start, args[6], 6, 7, rows, max_vectors)
        return context.get_dummy_value()
    return codegen


@intrinsic
def rows_block(typingctx, a, row, src, offsets, shift, start, count, out):
    """out[row + r, start + t] += sum_k a[row + r, k] * src[offsets[k] + shift + start + t] for
    r < 4, t < count <= block_width(a); rows of ``a`` and ``out`` contiguous, any row stride."""
    return types.none(a, row, src, offsets, shift, start, count, out), _block_codegen(4, BLOCK_VECTORS)


@intrinsic
def narrow_block(typingctx, a, row, src, offsets, shift, start, count, out):
    """:func:`rows_block` for r < NARROW_ROWS and t < count <= one vector (the same sums, in the same
    order)."""
    return types.none(a, row, src, offsets, shift, start, count, out), _block_codegen(NARROW_ROWS, 1)


def _emit(context, builder, signature, args, tap_row, start, count, count_index, out_index, rows, max_vectors):
    """The block of rows ``row .. row + rows - 1`` of ``a`` (args 0, 1) into ``out``: ``max_vectors``
    vectors of pixels whole, or as many as ``count`` needs, the last masked; ``tap_row(k)`` points at
    the first pixel of tap k's input row."""
    a_type, out_type = signature.args[0], signature.args[out_index]
    a_array = context.make_array(a_type)(context, builder, args[0])
    out_array = context.make_array(out_type)(context, builder, args[out_index])
    row = context.cast(builder, args[1], signature.args[1], types.int64)
    count = context.cast(builder, count, signature.args[count_index], types.int64)
    prefer_wide_vectors(builder.function)
    element = context.get_value_type(a_type.dtype)
    itemsize = context.get_abi_sizeof(element)
    lanes = VECTOR_BYTES // itemsize
    vector = ir.VectorType(element, lanes)

    def row_start(array, r):
        stride = builder.sdiv(cgutils.unpack_tuple(builder, array.strides)[0], ir.Constant(I64, itemsize))
        return builder.gep(array.data, [builder.mul(builder.add(row, ir.Constant(I64, r)), stride)])

    depth = cgutils.unpack_tuple(builder, a_array.shape)[1]
    weights = [row_start(a_array, r) for r in range(rows)]
    outputs = [builder.gep(row_start(out_array, r), [start]) for r in range(rows)]
    fma = fma_intrinsic(builder.module, vector, itemsize)

    def block(vectors, masked_count):
        _emit_taps(builder, weights, outputs, tap_row, depth, vector, fma, vectors,
                   _Access(builder, vector, itemsize, vectors, masked_count))

    whole_block = builder.icmp_signed("==", count, ir.Constant(I64, max_vectors * lanes))
    with builder.if_else(whole_block) as (whole, partial):
        with whole:
            block(max_vectors, None)
        with partial:  # as many vectors as the count needs, the last one masked
            needed = builder.sdiv(builder.add(count, ir.Constant(I64, lanes - 1)), ir.Constant(I64, lanes))
            done = builder.append_basic_block("block.done")
            switch = builder.switch(needed, done)
            for vectors in range(1, max_vectors + 1):
                case = builder.append_basic_block(f"block.{vectors}")
                switch.add_case(ir.Constant(I64, vectors), case)
                builder.position_at_end(case)
                block(vectors, count)
                builder.branch(done)
            builder.position_at_end(done)


def _vector_at(builder, pointer, v, vector):
    """A vector pointer to the ``v``-th vector from ``pointer``."""
    return builder.bitcast(builder.gep(pointer, [ir.Constant(I64, v * vector.count)]), vector.as_pointer())


def _suffix(itemsize: int) -> str:
    return "f32" if itemsize == 4 else "f64"


def fma_intrinsic(module, vector, itemsize):
    """``llvm.fma`` of ``vector``: a * b + c lane by lane, one rounding."""
    return cgutils.get_or_insert_function(module, ir.FunctionType(vector, [vector] * 3),
                                          f"llvm.fma.v{vector.count}{_suffix(itemsize)}")


def masked_intrinsics(module, vector, itemsize):
    """``llvm.masked.load`` and ``llvm.masked.store`` of ``vector``: (pointer, align, mask, passthru)
    and (value, pointer, align, mask); lanes off in the mask touch no memory."""
    mask_type = ir.VectorType(ir.IntType(1), vector.count)
    name = f"v{vector.count}{_suffix(itemsize)}.p0"
    load = cgutils.get_or_insert_function(
        module, ir.FunctionType(vector, [vector.as_pointer(), I32, mask_type, vector]), f"llvm.masked.load.{name}")
    store = cgutils.get_or_insert_function(
        module, ir.FunctionType(ir.VoidType(), [vector, vector.as_pointer(), I32, mask_type]), f"llvm.masked.store.{name}")
    return load, store


def lane_indices(lanes):
    """The constant vector ``[0, 1, ..., lanes - 1]`` (int64)."""
    return ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))


class _Access:
    """Vector loads and stores of a block of ``vectors`` vectors; with ``count``, the last vector's
    lanes at or past ``count`` pixels into the block are masked off (llvm.masked.load/store: no
    memory is touched there)."""

    def __init__(self, builder, vector, itemsize, vectors, count):
        self.builder, self.vector, self.itemsize = builder, vector, itemsize
        self.align = ir.Constant(I32, itemsize)
        if count is None:
            self.masks = None
            return
        lanes = vector.count
        self.load_masked, self.store_masked = masked_intrinsics(builder.module, vector, itemsize)
        lane_index = lane_indices(lanes)
        valid = splat(builder, builder.sub(count, ir.Constant(I64, (vectors - 1) * lanes)), lanes)
        self.masks = [None] * (vectors - 1) + [builder.icmp_signed("<", lane_index, valid)]

    def load(self, pointer, v):
        if self.masks is None or self.masks[v] is None:
            return self.builder.load(pointer, align=self.itemsize)
        zero = ir.Constant(self.vector, [0.0] * self.vector.count)
        return self.builder.call(self.load_masked, [pointer, self.align, self.masks[v], zero])

    def store(self, value, pointer, v):
        if self.masks is None or self.masks[v] is None:
            self.builder.store(value, pointer, align=self.itemsize)
        else:
            self.builder.call(self.store_masked, [value, pointer, self.align, self.masks[v]])


def splat(builder, value, lanes):
    """A vector of ``lanes`` copies of the scalar ``value``."""
    undefined = ir.Constant(ir.VectorType(value.type, lanes), ir.Undefined)
    first = builder.insert_element(undefined, value, ir.Constant(I32, 0))
    return builder.shuffle_vector(first, undefined, ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))


def _emit_taps(builder, weights, outputs, tap_row, depth, vector, fma, vectors, access):
    """4 x ``vectors`` accumulators loaded from the rows ``outputs``, one pass over the ``depth``
    taps, stored back."""
    slots = []
    for pointer in outputs:
        for v in range(vectors):
            slot = cgutils.alloca_once(builder, vector)  # promoted to a register by LLVM's mem2reg
            builder.store(access.load(_vector_at(builder, pointer, v, vector), v), slot)
            slots.append(slot)
    with cgutils.for_range(builder, depth) as loop:
        tap = loop.index
        first = tap_row(tap)
        inputs = [access.load(_vector_at(builder, first, v, vector), v) for v in range(vectors)]
        for r, weight_row in enumerate(weights):
            weight = splat(builder, builder.load(builder.gep(weight_row, [tap])), vector.count)
            for v, value in enumerate(inputs):
                slot = slots[r * vectors + v]
                builder.store(builder.call(fma, [weight, value, builder.load(slot)]), slot)
    for r, pointer in enumerate(outputs):
        for v in range(vectors):
            access.store(builder.load(slots[r * vectors + v]), _vector_at(builder, pointer, v, vector), v)


@intrinsic
def dots_block(typingctx, a, a0, a1, a2, a3, b, b0, b1, b2, b3, m, out, row, col, cols):
    """out[row + r, col + s] += sum_{t < m} a[a_r + t] * b[b_s + t] for r < 4 and s < cols <= 4:
    16 dot products of runs that start ``a_r`` and ``b_s`` elements after the first element of
    ``a`` and ``b``, accumulated in vectors (the last one masked) and summed across lanes at the
    end; ``out``'s rows contiguous, any row stride."""
    def codegen(context, builder, signature, args):
        a_type, b_type, out_type = signature.args[0], signature.args[5], signature.args[11]
        a_data = context.make_array(a_type)(context, builder, args[0]).data
        b_data = context.make_array(b_type)(context, builder, args[5]).data
        out_array = context.make_array(out_type)(context, builder, args[11])
        a_rows, b_rows = ([builder.gep(data, [context.cast(builder, args[i], signature.args[i], types.int64)])
                           for i in indices] for data, indices in ((a_data, (1, 2, 3, 4)), (b_data, (6, 7, 8, 9))))
        m, row, col, cols = (context.cast(builder, args[i], signature.args[i], types.int64) for i in (10, 12, 13, 14))
        prefer_wide_vectors(builder.function)
        element = context.get_value_type(a_type.dtype)
        itemsize = context.get_abi_sizeof(element)
        vector = ir.VectorType(element, VECTOR_BYTES // itemsize)
        lanes = vector.count
        fma = fma_intrinsic(builder.module, vector, itemsize)
        slots = []
        for _ in range(16):
            slot = cgutils.alloca_once(builder, vector)  # promoted to a register by LLVM's mem2reg
            builder.store(ir.Constant(vector, [0.0] * lanes), slot)
            slots.append(slot)

        def accumulate(t, access):
            xs = [access.load(_vector_at(builder, builder.gep(p, [t]), 0, vector), 0) for p in a_rows]
            ys = [access.load(_vector_at(builder, builder.gep(p, [t]), 0, vector), 0) for p in b_rows]
            for r, x in enumerate(xs):
                for s, y in enumerate(ys):
                    slot = slots[4 * r + s]
                    builder.store(builder.call(fma, [x, y, builder.load(slot)]), slot)

        whole = builder.mul(builder.sdiv(m, ir.Constant(I64, lanes)), ir.Constant(I64, lanes))
        with cgutils.for_range_slice(builder, ir.Constant(I64, 0), whole, ir.Constant(I64, lanes)) as (t, _):
            accumulate(t, _Access(builder, vector, itemsize, 1, None))
        with builder.if_then(builder.icmp_signed("<", whole, m)):
            accumulate(whole, _Access(builder, vector, itemsize, 1, builder.sub(m, whole)))
        out_stride = builder.sdiv(cgutils.unpack_tuple(builder, out_array.strides)[0], ir.Constant(I64, itemsize))
        for r in range(4):
            out_row = builder.gep(out_array.data, [builder.add(builder.mul(builder.add(row, ir.Constant(I64, r)), out_stride), col)])
            for s in range(4):
                total = _lane_sum(builder, builder.load(slots[4 * r + s]))
                with builder.if_then(builder.icmp_signed("<", ir.Constant(I64, s), cols)):
                    target = builder.gep(out_row, [ir.Constant(I64, s)])
                    builder.store(builder.fadd(builder.load(target), total), target)
        return context.get_dummy_value()

    return types.none(a, a0, a1, a2, a3, b, b0, b1, b2, b3, m, out, row, col, cols), codegen


def _lane_sum(builder, value):
    """The sum of a vector's lanes, by halving: (v[:n/2] + v[n/2:]) until one lane is left."""
    lanes = value.type.count
    while lanes > 1:
        half = lanes // 2
        low = builder.shuffle_vector(value, value, ir.Constant(ir.VectorType(I32, half), list(range(half))))
        high = builder.shuffle_vector(value, value, ir.Constant(ir.VectorType(I32, half), list(range(half, lanes))))
        value, lanes = builder.fadd(low, high), half
    return builder.extract_element(value, ir.Constant(I32, 0))
