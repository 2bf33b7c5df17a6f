"""The built-in optimizers: sgd, adam, adamw (PyTorch's ``torch.optim`` update rules).

Each updates parameters in place with the learning rate the trainer passes (the schedule's),
through the device's kernels ``sgd_update`` and ``adam_update`` (:mod:`.cpu`, :mod:`.cuda`).
"""

from __future__ import annotations

from numbers import Real

from cnnrun.engine import ConfigError, hookimpl
from cnnrun.engine.optim import Optimizer
from cnnrun.engine.options import bool_option, float_option, show


class SGD(Optimizer):
    """Stochastic gradient descent with momentum. PyTorch: ``torch.optim.SGD``.

    g = grad + weight_decay * p; with momentum, buf = g on the first step, else
    buf = momentum * buf + (1 - dampening) * g, and g = g + momentum * buf (nesterov) or buf;
    p -= lr * g.
    """

    type_name = "sgd"
    slots = ("momentum_buffer",)  # only with momentum
    kernels = ("sgd_update",)

    def __init__(self, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = float_option(momentum, "momentum", low=0, high=1, high_open=True)
        self.dampening = float_option(dampening, "dampening", low=0, high=1)
        self.nesterov = bool_option(nesterov, "nesterov")
        self.weight_decay = float_option(weight_decay, "weight_decay", low=0)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ConfigError("nesterov needs momentum > 0 and dampening = 0; got "
                              f"momentum={show(momentum)}, dampening={show(dampening)}", key="nesterov")
        if not self.momentum:
            self.slots = ()

    def update(self, kernels, param, grad, state, lr):
        kernels.sgd_update(self, param, grad, state, lr)


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient. PyTorch: ``torch.optim.Adam``.

    g = grad + weight_decay * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), t = the step (from 1).
    """

    type_name = "adam"
    slots = ("exp_avg", "exp_avg_sq")
    kernels = ("adam_update",)
    decoupled = False

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        self.betas = _betas(betas)
        self.eps = float_option(eps, "eps", low=0, low_open=True)
        self.weight_decay = float_option(weight_decay, "weight_decay", low=0)

    def update(self, kernels, param, grad, state, lr):
        kernels.adam_update(self, param, grad, state, lr)


class AdamW(Adam):
    """Adam with decoupled weight decay. PyTorch: ``torch.optim.AdamW``.

    p *= 1 - lr * weight_decay, then the Adam step without L2 in the gradient.
    """

    type_name = "adamw"
    decoupled = True

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(lr, betas, eps, weight_decay)


def _betas(value) -> tuple[float, float]:
    """Two numbers, each in [0, 1)."""
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(b, Real) and not isinstance(b, bool) and 0 <= b < 1 for b in value))
    if not ok:
        raise ConfigError(f"betas must be a list of two numbers in [0, 1); got betas={show(value)}",
                          key="betas")
    return float(value[0]), float(value[1])


@hookimpl
def cnnrun_register_optimizers(register):
    for optimizer in (SGD, Adam, AdamW):
        register(optimizer)


@hookimpl
def cnnrun_register_kernels(register):
    register("cpu", "cnnrun.plugins.optimizers.cpu")
    register("cuda", "cnnrun.plugins.optimizers.cuda")
