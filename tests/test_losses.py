"""Losses: against naive loops, finite differences (float64), huge logits, the softmax chain rule."""

import math

import numpy as np
import pytest

from cnnrun.engine import Context, ShapeError
from cnnrun.engine.losses import (KERNELS, LOSSES, binary_cross_entropy, cross_entropy,
                                  cross_entropy_from_probabilities, l1, mse, smooth_l1)
from cnnrun.engine.plugins import get_backend
from cnnrun.plugins.activations import Softmax

from helpers import numerical_gradient

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-14)}


# -- naive references ---------------------------------------------------------------------------
def naive_cross_entropy(logits, labels):
    """Loss and gradient, one row and one class at a time, without any shift (moderate logits)."""
    n, c = logits.shape
    loss, grad = 0.0, np.zeros((n, c))
    for i in range(n):
        total = math.fsum(math.exp(float(z)) for z in logits[i])
        loss += math.log(total) - float(logits[i, labels[i]])
        for k in range(c):
            grad[i, k] = (math.exp(float(logits[i, k])) / total - (k == labels[i])) / n
    return loss / n, grad


def naive_mse(output, target):
    flat_o, flat_t = output.reshape(-1), target.reshape(-1)
    size = flat_o.size
    loss = math.fsum((float(o) - float(t)) ** 2 for o, t in zip(flat_o, flat_t)) / size
    grad = np.array([2 * (float(o) - float(t)) / size for o, t in zip(flat_o, flat_t)])
    return loss, grad.reshape(output.shape)


def softmax(z):
    return Softmax("softmax").forward(Context(backend=get_backend("cpu")), z)


def random_cases(seed, count=12):
    rng = np.random.default_rng(seed)
    for trial in range(count):
        n, c = int(rng.integers(1, 6)), int(rng.integers(1, 8))
        dtype = ("float32", "float64")[trial % 2]
        yield dtype, (3 * rng.standard_normal((n, c))).astype(dtype), rng.integers(0, c, n)


# -- cross-entropy ------------------------------------------------------------------------------
def test_cross_entropy_matches_reference():
    for dtype, logits, labels in random_cases(0):
        loss, grad = cross_entropy(logits, labels)
        ref_loss, ref_grad = naive_cross_entropy(logits, labels)
        assert type(loss) is float and grad.dtype == dtype and grad.shape == logits.shape
        np.testing.assert_allclose(loss, ref_loss, **TOL[dtype])
        np.testing.assert_allclose(grad, ref_grad, **TOL[dtype])


def test_cross_entropy_gradient_finite_differences(rng):
    logits, labels = rng.standard_normal((4, 5)), np.array([0, 4, 2, 2])
    _, grad = cross_entropy(logits, labels)
    expected = numerical_gradient(lambda z: cross_entropy(z, labels)[0], logits.copy())
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_huge_logits(dtype):
    logits = np.array([[1e4, 0, -1e4], [-1e4, 1e4, 1e4]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grad = cross_entropy(logits, np.array([0, 2]))
        # row 0: exactly right (loss 0); row 1: two tied classes, loss log 2
        np.testing.assert_allclose(loss, math.log(2) / 2, rtol=1e-6)
        np.testing.assert_allclose(grad, [[0, 0, 0], [0, 0.25, -0.25]], atol=1e-7)
        loss, grad = cross_entropy(logits, np.array([2, 0]))
        np.testing.assert_allclose(loss, (2e4 + 2e4 + math.log(2)) / 2, rtol=1e-6)
        np.testing.assert_allclose(grad, [[0.5, 0, -0.5], [-0.5, 0.25, 0.25]], atol=1e-7)


def test_probabilities_match_cross_entropy_on_logits():
    for dtype, logits, labels in random_cases(1):
        loss, grad = cross_entropy_from_probabilities(softmax(logits), labels)
        ref_loss, ref_grad = cross_entropy(logits, labels)
        assert type(loss) is float and grad.dtype == dtype
        np.testing.assert_allclose(loss, ref_loss, **TOL[dtype])
        np.testing.assert_allclose(grad, ref_grad, **TOL[dtype])


def test_probabilities_gradient_is_the_chain_rule_through_softmax(rng):
    z, labels = rng.standard_normal((3, 4)), np.array([1, 3, 0])
    layer, ctx = Softmax("softmax"), Context(backend=get_backend("cpu"))
    p = layer.forward(ctx, z)
    d_loss_d_p = np.zeros_like(p)  # L = -mean(log p_y): dL/dp_y = -1 / (N p_y)
    d_loss_d_p[np.arange(3), labels] = -1 / (3 * p[np.arange(3), labels])
    chain = layer.backward(ctx, d_loss_d_p)
    _, grad = cross_entropy_from_probabilities(p, labels)
    np.testing.assert_allclose(grad, chain, rtol=1e-12, atol=1e-15)
    numeric = numerical_gradient(lambda v: cross_entropy_from_probabilities(softmax(v), labels)[0], z.copy())
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_probabilities_zero_stays_finite(dtype):
    probs = np.array([[1.0, 0.0], [0.5, 0.5]], dtype=dtype)
    loss, grad = cross_entropy_from_probabilities(probs, np.array([1, 0]))
    expected = (-math.log(np.finfo(dtype).tiny) + math.log(2)) / 2  # 708.4 (float64), 87.3 (float32)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(grad, [[0.5, -0.5], [-0.25, 0.25]])


# -- mse and accuracy ---------------------------------------------------------------------------
def test_mse_matches_reference(rng):
    for trial in range(8):
        dtype = ("float32", "float64")[trial % 2]
        shape = [(3, 4), (2, 3, 5), (1, 1)][trial % 3]
        output = rng.standard_normal(shape).astype(dtype)
        target = rng.standard_normal(shape).astype(dtype)
        loss, grad = mse(output, target)
        ref_loss, ref_grad = naive_mse(output, target)
        assert type(loss) is float and grad.dtype == dtype
        np.testing.assert_allclose(loss, ref_loss, **TOL[dtype])
        np.testing.assert_allclose(grad, ref_grad, **TOL[dtype])


def test_mse_with_labels_is_mse_with_one_hot(rng):
    output, labels = rng.standard_normal((3, 4)), np.array([3, 0, 3])
    one_hot = np.array([[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    loss, grad = mse(output, labels)
    ref_loss, ref_grad = naive_mse(output, one_hot)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)
    numeric = numerical_gradient(lambda v: mse(v, labels)[0], output.copy())
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_mse_does_not_touch_its_inputs():
    output, target = np.array([[1.0, 2.0]]), np.array([[0.0, 4.0]])
    loss, grad = mse(output, target)
    assert loss == 2.5  # (1 + 4) / 2
    np.testing.assert_array_equal(grad, [[1.0, -2.0]])
    np.testing.assert_array_equal(output, [[1.0, 2.0]])


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_loss_kernels_count_the_top_1_rows(name):
    """The CPU loss kernels: the loss and gradient of their function, the rows whose largest output
    is at the label, the predicted labels; no gradient when not asked for."""
    output = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    function = {**LOSSES, "cross_entropy_from_probabilities": cross_entropy_from_probabilities}[name]
    loss, correct, grad, predicted = KERNELS[name](output, np.array([1, 1, 1]))
    expected_loss, expected_grad = function(output, np.array([1, 1, 1]))
    assert (loss, correct, type(correct)) == (expected_loss, 2, int)
    np.testing.assert_array_equal(grad, expected_grad)
    np.testing.assert_array_equal(predicted, [1, 0, 1])
    assert KERNELS[name](output, np.array([1, 0, 1]), False)[1:3] == (3, None)


def test_losses_by_name():
    assert LOSSES == {"cross_entropy": cross_entropy, "mse": mse, "l1": l1, "smooth_l1": smooth_l1,
                      "binary_cross_entropy": binary_cross_entropy}


@pytest.mark.parametrize("call, message", [
    (lambda: cross_entropy(np.zeros((2, 3)), np.array([0, 3])),
     r"label 3 is out of range for 3 classes \(0 .. 2\)"),
    (lambda: cross_entropy(np.zeros((2, 3)), np.array([-1, 0])), r"label -1 is out of range for 3 classes"),
    (lambda: cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2])),
     r"labels must be 2 integers \(one per example\); got int64 labels of shape \(3,\)"),
    (lambda: cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])), r"got float64 labels of shape \(2,\)"),
    (lambda: cross_entropy(np.zeros((2, 3, 4)), np.array([0, 1])),
     r"class labels need an output of shape \(N, classes\); got shape \(2, 3, 4\)"),
    (lambda: cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=int)), "the batch is empty"),
    (lambda: cross_entropy_from_probabilities(np.zeros((1, 2)), np.array([2])), "label 2 is out of range"),
    (lambda: mse(np.zeros((2, 3)), np.zeros((3, 2))),
     r"mse target must have the output's shape \(2, 3\) or be integer labels; got shape \(3, 2\)"),
    (lambda: mse(np.zeros((2, 3)), np.array([0, 5])), "label 5 is out of range for 3 classes"),
    (lambda: KERNELS["cross_entropy"](np.zeros((2, 3)), np.array([[0], [1]])), r"labels must be 2 integers"),
])
def test_errors_name_the_value(call, message):
    with pytest.raises(ShapeError, match=message):
        call()
