"""The element-wise activations of :mod:`.scalar`: y = f(x), dx = dy * f'(x), through the device's
``OP_forward(x, a, b)`` / ``OP_backward(x, grad, a, b)`` kernels. Each layer names its operation and
its two numeric arguments (a, b); the formulas and derivatives are in :mod:`.scalar`.
"""

from __future__ import annotations

from typing import ClassVar

from cnnrun.engine import Layer
from cnnrun.engine.options import choice_option, float_option, show

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def clip_to_onnx(layer, graph, x):
    """ONNX ``Clip`` between the layer's two arguments (an infinite bound left out): hardtanh, relu6, clip."""
    bounds = ("" if abs(v) == float("inf") else graph.scalar(v) for v in layer.arguments)
    return graph.op("Clip", x, *bounds)


class Elementwise(Layer):
    """Base class: ``op`` names the operation (``ops`` all those an instance may pick), and
    ``arguments`` are the (a, b) passed to its kernels."""

    op: ClassVar[str]
    ops: ClassVar[tuple[str, ...]] = ()
    arguments: tuple[float, float] = (0.0, 0.0)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.kernels = tuple(f"{op}_{way}" for op in cls.ops or (cls.op,) for way in ("forward", "backward"))

    def forward(self, ctx, x):
        ctx.saved.x = x
        return getattr(ctx.kernels, f"{self.op}_forward")(x, *self.arguments)

    def backward(self, ctx, grad):
        return getattr(ctx.kernels, f"{self.op}_backward")(ctx.saved.x, grad, *self.arguments)

    def to_onnx(self, graph, x):
        """The ONNX operator ``onnx_op`` with ``onnx_attributes()``; subclasses without one override this."""
        return graph.op(self.onnx_op, x, **self.onnx_attributes())

    def onnx_attributes(self) -> dict:
        return {}


class ELU(Elementwise):
    """y = x if x > 0 else alpha * (exp(x) - 1). PyTorch: ``nn.ELU(alpha=1.0)``."""

    type_name = op = "elu"
    onnx_op = "Elu"

    def __init__(self, name, alpha=1.0):
        super().__init__(name)
        self.arguments = (float_option(alpha, "alpha"), 1.0)

    def onnx_attributes(self):
        return {"alpha": self.arguments[0]}


class SELU(Elementwise):
    """y = scale * (x if x > 0 else alpha * (exp(x) - 1)), alpha = 1.67326..., scale = 1.05070...
    PyTorch: ``nn.SELU``."""

    type_name, op, onnx_op = "selu", "elu", "Selu"
    arguments = (SELU_ALPHA, SELU_SCALE)


class CELU(Elementwise):
    """y = x if x > 0 else alpha * (exp(x / alpha) - 1), alpha != 0. PyTorch: ``nn.CELU(alpha=1.0)``."""

    type_name = op = "celu"
    onnx_op = "Celu"

    def __init__(self, name, alpha=1.0):
        super().__init__(name)
        alpha = float_option(alpha, "alpha")
        if alpha == 0:
            raise self.error("alpha must not be 0 (celu divides by it); got alpha=0", key="alpha")
        self.arguments = (alpha, 0.0)

    def onnx_attributes(self):
        return {"alpha": self.arguments[0]}


class GELU(Elementwise):
    """y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)); with ``approximate: "tanh"``
    y = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))). PyTorch: ``nn.GELU(approximate="none")``."""

    type_name = "gelu"
    ops = ("gelu", "gelu_tanh")

    def __init__(self, name, approximate="none"):
        super().__init__(name)
        self.op = "gelu_tanh" if choice_option(approximate, "approximate", ("none", "tanh")) == "tanh" else "gelu"

    def to_onnx(self, graph, x):
        """ONNX ``Gelu`` from opset 20; before, PyTorch's patterns: x * (erf(x / sqrt 2) + 1) * 0.5, and
        x * (tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)) + 1) * 0.5 for the tanh form."""
        from .scalar import GELU_TANH_C, GELU_TANH_K

        if graph.opset >= 20:
            return graph.op("Gelu", x, approximate="tanh" if self.op == "gelu_tanh" else "none")
        if self.op == "gelu":
            inner = graph.op("Erf", graph.op("Div", x, graph.scalar(2 ** 0.5)))
        else:
            cube = graph.op("Mul", graph.op("Pow", x, graph.scalar(3.0)), graph.scalar(GELU_TANH_C))
            inner = graph.op("Tanh", graph.op("Mul", graph.op("Add", x, cube), graph.scalar(GELU_TANH_K)))
        return graph.op("Mul", graph.op("Mul", x, graph.op("Add", inner, graph.scalar(1.0))), graph.scalar(0.5))


class SiLU(Elementwise):
    """y = x * sigmoid(x) (swish). PyTorch: ``nn.SiLU``."""

    type_name = op = "silu"

    def to_onnx(self, graph, x):
        """x * Sigmoid(x) (ONNX has no SiLU)."""
        return graph.op("Mul", x, graph.op("Sigmoid", x))


class Mish(Elementwise):
    """y = x * tanh(softplus(x)), softplus(x) = log(1 + exp(x)). PyTorch: ``nn.Mish``."""

    type_name = op = "mish"

    def to_onnx(self, graph, x):
        """ONNX ``Mish`` from opset 18; before, x * Tanh(Softplus(x))."""
        if graph.opset >= 18:
            return graph.op("Mish", x)
        return graph.op("Mul", x, graph.op("Tanh", graph.op("Softplus", x)))


class Hardswish(Elementwise):
    """y = x * min(max(x + 3, 0), 6) / 6. PyTorch: ``nn.Hardswish``."""

    type_name = op = "hardswish"

    def to_onnx(self, graph, x):
        """ONNX ``HardSwish`` from opset 14; before, x * HardSigmoid(x) (alpha 1/6, beta 1/2)."""
        if graph.opset >= 14:
            return graph.op("HardSwish", x)
        return graph.op("Mul", x, graph.op("HardSigmoid", x, alpha=1 / 6, beta=0.5))


class Hardsigmoid(Elementwise):
    """y = min(max(x + 3, 0), 6) / 6. PyTorch: ``nn.Hardsigmoid``."""

    type_name = op = "hardsigmoid"
    onnx_op = "HardSigmoid"

    def onnx_attributes(self):
        return {"alpha": 1 / 6, "beta": 0.5}


class Hardtanh(Elementwise):
    """y = min(max(x, min_val), max_val), min_val < max_val; dy/dx = 1 strictly between them, else 0.
    PyTorch: ``nn.Hardtanh(min_val=-1.0, max_val=1.0)``."""

    type_name = op = "hardtanh"
    to_onnx = clip_to_onnx

    def __init__(self, name, min_val=-1.0, max_val=1.0):
        super().__init__(name)
        low, high = float_option(min_val, "min_val"), float_option(max_val, "max_val")
        if low >= high:
            raise self.error(f"min_val must be less than max_val; got min_val={show(min_val)}, max_val={show(max_val)}",
                             key="min_val")
        self.arguments = (low, high)


class ReLU6(Elementwise):
    """y = min(max(x, 0), 6) (hardtanh from 0 to 6). PyTorch: ``nn.ReLU6``."""

    type_name, op = "relu6", "hardtanh"
    arguments = (0.0, 6.0)
    to_onnx = clip_to_onnx


class Clip(Elementwise):
    """y = min(max(x, min), max); a bound left out (null) is no bound; dy/dx = 1 where
    min <= x <= max, else 0. PyTorch: ``torch.clamp(x, min, max)``; ONNX ``Clip``."""

    type_name = op = "clip"
    to_onnx = clip_to_onnx

    def __init__(self, name, min=None, max=None):  # noqa: A002 (PyTorch's and ONNX's names)
        super().__init__(name)
        low = -float("inf") if min is None else float_option(min, "min")
        high = float("inf") if max is None else float_option(max, "max")
        if low > high:
            raise self.error(f"min must not be greater than max; got min={show(min)}, max={show(max)}", key="min")
        self.arguments = (low, high)


class Softplus(Elementwise):
    """y = log(1 + exp(beta x)) / beta, and y = x where beta x > threshold; beta > 0.
    PyTorch: ``nn.Softplus(beta=1.0, threshold=20.0)``."""

    type_name = op = "softplus"

    def __init__(self, name, beta=1.0, threshold=20.0):
        super().__init__(name)
        self.arguments = (float_option(beta, "beta", low=0, low_open=True), float_option(threshold, "threshold"))

    def to_onnx(self, graph, x):
        """ONNX ``Softplus`` of beta x, divided by beta (PyTorch's export), and x where beta x > threshold
        for a threshold below 20 (above, softplus(v) - v < e^-20 is below float32's resolution of v)."""
        beta, threshold = self.arguments
        bx = x if beta == 1 else graph.op("Mul", x, graph.scalar(beta))
        y = graph.op("Softplus", bx)
        y = y if beta == 1 else graph.op("Div", y, graph.scalar(beta))
        if threshold >= 20:
            return y
        return graph.op("Where", graph.op("Greater", bx, graph.scalar(threshold)), x, y)


class Softsign(Elementwise):
    """y = x / (1 + |x|). PyTorch: ``nn.Softsign``."""

    type_name = op = "softsign"
    onnx_op = "Softsign"


LAYERS = (ELU, SELU, CELU, GELU, SiLU, Mish, Hardswish, Hardsigmoid, Hardtanh, ReLU6, Clip, Softplus, Softsign)
