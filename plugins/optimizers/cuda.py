"""CUDA kernels of the built-in optimizers: one element-wise update per parameter, in place.

The formulas are those of :mod:`.cpu`. Scalars arrive already in the
parameter's dtype (as NumPy casts Python floats against float32 arrays), so float32 parameters are
updated in float32 arithmetic as on the CPU.
"""

from __future__ import annotations

import math

from numba import cuda

from cnnrun.engine.cuda import flat, grid


@cuda.jit
def _sgd(param, grad, buf, lr, weight_decay, momentum, keep, nesterov, first_step, use_momentum):
    """g = grad + wd * p; buf = g (first step) or momentum * buf + keep * g, keep = 1 - dampening;
    g = g + momentum * buf (nesterov) or buf; p -= lr * g."""
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i]
        if weight_decay != 0:
            g = param[i] * weight_decay + g
        if use_momentum:
            b = g if first_step else buf[i] * momentum + g * keep
            buf[i] = b
            g = g + b * momentum if nesterov else b
        param[i] -= g * lr


@cuda.jit
def _adam(param, grad, exp_avg, exp_avg_sq, beta1, keep1, beta2, keep2, step_size, correction2, eps,
          weight_decay, decay, decoupled):
    """p *= decay (decoupled) or g = grad + wd * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= step_size * m / (sqrt(v) / correction2 + eps)."""
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i]
        if decoupled:
            param[i] *= decay
        elif weight_decay != 0:
            g = param[i] * weight_decay + g
        m = exp_avg[i] * beta1 + g * keep1
        v = exp_avg_sq[i] * beta2 + g * g * keep2
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] -= m / (math.sqrt(v) / correction2 + eps) * step_size


def sgd_update(optimizer, param, grad, state, lr) -> None:
    """One :class:`~cnnrun.plugins.optimizers.SGD` step of the device array ``param``."""
    t = param.dtype.type
    buf = state["momentum_buffer"] if optimizer.momentum else param  # not touched without momentum
    _sgd[grid(param.size)](flat(param), flat(grad), flat(buf), t(lr), t(optimizer.weight_decay),
                           t(optimizer.momentum), t(1 - optimizer.dampening), optimizer.nesterov,
                           optimizer.step == 1, bool(optimizer.momentum))


def adam_update(optimizer, param, grad, state, lr) -> None:
    """One :class:`~cnnrun.plugins.optimizers.Adam` / ``AdamW`` step of the device array ``param``."""
    t = param.dtype.type
    beta1, beta2 = optimizer.betas
    step = optimizer.step
    decoupled = bool(optimizer.decoupled and optimizer.weight_decay)
    _adam[grid(param.size)](flat(param), flat(grad), flat(state["exp_avg"]), flat(state["exp_avg_sq"]),
                            t(beta1), t(1 - beta1), t(beta2), t(1 - beta2), t(lr / (1 - beta1 ** step)),
                            t(math.sqrt(1 - beta2 ** step)), t(optimizer.eps), t(optimizer.weight_decay),
                            t(1 - lr * optimizer.weight_decay), decoupled)


KERNELS = {"sgd_update": sgd_update, "adam_update": adam_update}
