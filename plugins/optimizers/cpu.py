"""CPU kernels of the built-in optimizers (NumPy, in place): the formulas of :mod:`cnnrun.plugins.optimizers`.

The temporaries are :meth:`Optimizer.scratch` arrays, so a step allocates nothing after the first.
"""

from __future__ import annotations

import math

import numpy as np


def sgd_update(optimizer, param, grad, state, lr) -> None:
    """One :class:`~cnnrun.plugins.optimizers.SGD` step of ``param``."""
    g = grad
    if optimizer.weight_decay:
        g = np.multiply(param, optimizer.weight_decay, out=optimizer.scratch(param, 0))
        g += grad
    tmp = optimizer.scratch(param, 1)
    if optimizer.momentum:
        buf = state["momentum_buffer"]
        if optimizer.step == 1:
            np.copyto(buf, g)
        else:
            buf *= optimizer.momentum
            buf += np.multiply(g, 1 - optimizer.dampening, out=tmp)
        g = np.add(g, np.multiply(buf, optimizer.momentum, out=tmp), out=tmp) if optimizer.nesterov else buf
    param -= np.multiply(g, lr, out=tmp)


def adam_update(optimizer, param, grad, state, lr) -> None:
    """One :class:`~cnnrun.plugins.optimizers.Adam` / ``AdamW`` step of ``param``."""
    beta1, beta2 = optimizer.betas
    g = grad
    if optimizer.weight_decay and optimizer.decoupled:
        param *= 1 - lr * optimizer.weight_decay
    elif optimizer.weight_decay:
        g = np.multiply(param, optimizer.weight_decay, out=optimizer.scratch(param, 0))
        g += grad
    m, v = state["exp_avg"], state["exp_avg_sq"]
    tmp = optimizer.scratch(param, 1)
    m *= beta1
    m += np.multiply(g, 1 - beta1, out=tmp)
    v *= beta2
    np.multiply(g, g, out=tmp)
    tmp *= 1 - beta2
    v += tmp
    step_size = lr / (1 - beta1 ** optimizer.step)
    np.sqrt(v, out=tmp)
    tmp /= math.sqrt(1 - beta2 ** optimizer.step)
    tmp += optimizer.eps
    np.divide(m, tmp, out=tmp)
    tmp *= step_size
    param -= tmp


KERNELS = {"sgd_update": sgd_update, "adam_update": adam_update}
