"""The element-wise activations as scalar functions, one forward f(v, a, b) and one derivative
f'(v, a, b) each, shared by the CPU (Numba ufuncs, :mod:`.cpu`) and CUDA (device functions,
:mod:`.cuda`) kernels. ``a`` and ``b`` are the layer's two numeric options (unused ones are 0).

Each is ``register_jitable``: plain Python when called from Python (the CUDA simulator), compiled
where a Numba ufunc or CUDA kernel calls it. Written so that no intermediate overflows for large |v|:
sigmoid and softplus split on the sign, exponentials only of non-positive arguments, gelu's tanh form
saturates before v^3 can overflow. Derivatives at the kinks follow PyTorch's backward formulas.
"""

from __future__ import annotations

import math

from numba.extending import register_jitable

SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)
INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)
GELU_TANH_K = 0.7978845608028654  # sqrt(2 / pi)
GELU_TANH_C = 0.044715
GELU_TANH_SATURATES = 10.0  # beyond |v| = 10 tanh(K (v + C v^3)) is +-1 exactly in float64


@register_jitable
def sigmoid(v):
    """1 / (1 + e^-v), neither branch overflowing."""
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@register_jitable
def log1p_exp(v):
    """log(1 + e^v) = max(v, 0) + log1p(e^-|v|)."""
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


@register_jitable
def elu(v, alpha, scale):
    return scale * v if v > 0 else scale * alpha * math.expm1(v)


@register_jitable
def elu_grad(v, alpha, scale):
    return scale if v > 0 else scale * alpha * math.exp(v)


@register_jitable
def celu(v, alpha, _):
    return v if v > 0 else alpha * math.expm1(v / alpha)


@register_jitable
def celu_grad(v, alpha, _):
    return 1.0 if v > 0 else math.exp(v / alpha)


@register_jitable
def gelu(v, _a, _b):
    return 0.5 * v * (1.0 + math.erf(v * SQRT_HALF))


@register_jitable
def gelu_grad(v, _a, _b):
    return 0.5 * (1.0 + math.erf(v * SQRT_HALF)) + v * INV_SQRT_2PI * math.exp(-0.5 * v * v)


@register_jitable
def gelu_tanh(v, _a, _b):
    if abs(v) > GELU_TANH_SATURATES:  # the formula's value, without v^3 overflowing
        return v if v > 0 else 0.0
    return 0.5 * v * (1.0 + math.tanh(GELU_TANH_K * (v + GELU_TANH_C * v * v * v)))


@register_jitable
def gelu_tanh_grad(v, _a, _b):
    if abs(v) > GELU_TANH_SATURATES:
        return 1.0 if v > 0 else 0.0
    t = math.tanh(GELU_TANH_K * (v + GELU_TANH_C * v * v * v))
    return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_TANH_K * (1.0 + 3.0 * GELU_TANH_C * v * v)


@register_jitable
def silu(v, _a, _b):
    return v * sigmoid(v)


@register_jitable
def silu_grad(v, _a, _b):
    s = sigmoid(v)
    return s * (1.0 + v * (1.0 - s))


@register_jitable
def mish(v, _a, _b):
    return v * math.tanh(log1p_exp(v))


@register_jitable
def mish_grad(v, _a, _b):
    t = math.tanh(log1p_exp(v))
    return t + v * sigmoid(v) * (1.0 - t * t)


@register_jitable
def hardswish(v, _a, _b):
    if v <= -3.0:
        return 0.0
    return v if v >= 3.0 else v * (v + 3.0) / 6.0


@register_jitable
def hardswish_grad(v, _a, _b):
    if v < -3.0:
        return 0.0
    return v / 3.0 + 0.5 if v <= 3.0 else 1.0


@register_jitable
def hardsigmoid(v, _a, _b):
    if v <= -3.0:
        return 0.0
    return 1.0 if v >= 3.0 else v / 6.0 + 0.5


@register_jitable
def hardsigmoid_grad(v, _a, _b):
    return 1.0 / 6.0 if -3.0 < v < 3.0 else 0.0


@register_jitable
def clamp(v, low, high):
    """min(max(v, low), high); NaN stays NaN."""
    if v < low:
        return low
    return high if v > high else v


@register_jitable
def hardtanh_grad(v, low, high):
    return 1.0 if low < v < high else 0.0


@register_jitable
def clip_grad(v, low, high):
    return 1.0 if low <= v <= high else 0.0


@register_jitable
def softplus(v, beta, threshold):
    z = beta * v
    return v if z > threshold else log1p_exp(z) / beta


@register_jitable
def softplus_grad(v, beta, threshold):
    z = beta * v
    return 1.0 if z > threshold else sigmoid(z)


@register_jitable
def softsign(v, _a, _b):
    return v / (1.0 + abs(v))


@register_jitable
def softsign_grad(v, _a, _b):
    d = 1.0 + abs(v)
    return 1.0 / d / d


OPS = {  # operation -> (forward, derivative); kernels OP_forward(x, a, b), OP_backward(x, grad, a, b)
    "elu": (elu, elu_grad),  # selu too: alpha and scale fixed
    "celu": (celu, celu_grad),
    "gelu": (gelu, gelu_grad),
    "gelu_tanh": (gelu_tanh, gelu_tanh_grad),
    "silu": (silu, silu_grad),
    "mish": (mish, mish_grad),
    "hardswish": (hardswish, hardswish_grad),
    "hardsigmoid": (hardsigmoid, hardsigmoid_grad),
    "hardtanh": (clamp, hardtanh_grad),  # relu6 too: 0 and 6
    "clip": (clamp, clip_grad),
    "softplus": (softplus, softplus_grad),
    "softsign": (softsign, softsign_grad),
}


OPERATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", "prelu")
"""The activations whose kernels each device module writes out itself; those of :data:`OPS` are
generated from their scalar functions."""


def kernel_table(namespace: dict, elementwise_kernels) -> dict:
    """A device module's ``KERNELS``: its ``OP_forward``/``OP_backward`` for :data:`OPERATIONS` (from
    ``namespace``, the module's globals), and ``elementwise_kernels(op, f, df)`` for :data:`OPS`."""
    table = {f"{op}_{way}": namespace[f"{op}_{way}"] for op in OPERATIONS for way in ("forward", "backward")}
    table.update({f.__name__: f for op, functions in OPS.items() for f in elementwise_kernels(op, *functions)})
    return table
