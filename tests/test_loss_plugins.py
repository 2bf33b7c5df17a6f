"""Losses as plugins (issue 15): PyTorch's formulas written out, float64 finite differences, the CUDA
kernels under the simulator, BatchLoss from a name, a JSON object, a Loss or a Python function, and a
loss registered by a plugin used from a network file."""

import json
import math

import numpy as np
import pytest

from cnnrun.engine import CnnrunError, ConfigError, Network, PluginError, hookimpl
from cnnrun.engine.batch_loss import BatchLoss, make_loss
from cnnrun.engine.losses import (KERNELS, Loss, binary_cross_entropy, cross_entropy, cross_entropy_from_probabilities,
                                  l1, mse, smooth_l1)
from cnnrun.engine.plugins import Registries
from cnnrun.engine.train import train

from helpers import numerical_gradient

TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-11, atol=1e-13)}


# -- PyTorch's formulas, one element at a time --------------------------------------------------------------------
def torch_cross_entropy(logits, labels, label_smoothing=0.0, weight=None):
    """torch.nn.functional.cross_entropy(reduction="mean"): (1 - e) nll + e / C * smooth, both over
    sum_n w[y_n]; nll_n = -w[y_n] log p[n, y_n], smooth_n = -sum_c w[c] log p[n, c]."""
    n, c = logits.shape
    w = np.ones(c) if weight is None else np.asarray(weight, float)
    nll = smooth = total = 0.0
    for i in range(n):
        log_sum = math.log(math.fsum(math.exp(float(z)) for z in logits[i]))
        nll -= w[labels[i]] * (float(logits[i, labels[i]]) - log_sum)
        smooth -= math.fsum(w[k] * (float(logits[i, k]) - log_sum) for k in range(c))
        total += w[labels[i]]
    return (1 - label_smoothing) * nll / total + label_smoothing / c * smooth / total


def torch_elementwise(kind, output, target, beta=1.0):
    """mse_loss, l1_loss, smooth_l1_loss(beta), binary_cross_entropy_with_logits: the mean of the terms."""
    terms = []
    for y, t in zip(output.reshape(-1).tolist(), target.reshape(-1).tolist()):
        d = y - t
        if kind == "mse":
            terms.append(d * d)
        elif kind == "l1":
            terms.append(abs(d))
        elif kind == "smooth_l1":
            terms.append(0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta)
        else:
            s = 1 / (1 + math.exp(-y))
            terms.append(-(t * math.log(s) + (1 - t) * math.log(1 - s)))
    return math.fsum(terms) / len(terms)


ELEMENTWISE = {"mse": mse, "l1": l1, "smooth_l1": smooth_l1, "binary_cross_entropy": binary_cross_entropy}


def cases(seed, count=6):
    rng = np.random.default_rng(seed)
    for trial in range(count):
        n, c = int(rng.integers(1, 5)), int(rng.integers(2, 6))
        yield ("float32", "float64")[trial % 2], rng, n, c


# -- values and gradients --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label_smoothing, weighted", [(0.0, True), (0.2, False), (0.3, True), (1.0, True)])
def test_cross_entropy_options_match_torch_and_finite_differences(label_smoothing, weighted):
    for dtype, rng, n, c in cases(int(label_smoothing * 10) + weighted):
        logits = (2 * rng.standard_normal((n, c))).astype(dtype)
        labels = rng.integers(0, c, n)
        weight = rng.uniform(0.1, 3, c).tolist() if weighted else None
        loss, grad = cross_entropy(logits, labels, label_smoothing, weight)
        assert type(loss) is float and grad.dtype == dtype
        np.testing.assert_allclose(loss, torch_cross_entropy(logits, labels, label_smoothing, weight), **TOL[dtype])
        z = logits.astype(np.float64)
        numeric = numerical_gradient(lambda v: cross_entropy(v, labels, label_smoothing, weight)[0], z)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5 if dtype == "float32" else 1e-6, atol=1e-7)
        probs = np.exp(z - z.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        fused_loss, fused_grad = cross_entropy_from_probabilities(probs, labels, label_smoothing, weight)
        np.testing.assert_allclose(fused_loss, loss, **TOL[dtype])  # the softmax chain rule, in closed form
        np.testing.assert_allclose(fused_grad, grad, **TOL[dtype])


@pytest.mark.parametrize("kind, beta", [("mse", 1.0), ("l1", 1.0), ("smooth_l1", 1.0), ("smooth_l1", 0.3),
                                        ("smooth_l1", 0.0), ("binary_cross_entropy", 1.0)])
def test_elementwise_losses_match_torch_and_finite_differences(kind, beta):
    function = ELEMENTWISE[kind]
    call = (lambda y, t: function(y, t, beta)) if kind == "smooth_l1" else function
    for dtype, rng, n, c in cases(len(kind) + int(10 * beta)):
        output = (2 * rng.standard_normal((n, c))).astype(dtype)
        target = (rng.uniform(0, 1, (n, c)) if kind == "binary_cross_entropy" else rng.standard_normal((n, c)))
        loss, grad = call(output, target)
        assert type(loss) is float and grad.dtype == dtype and grad.shape == output.shape
        np.testing.assert_allclose(loss, torch_elementwise(kind, output.astype(float), target, beta), **TOL[dtype])
        numeric = numerical_gradient(lambda v: call(v, target)[0], output.astype(np.float64))
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)
        labels = rng.integers(0, c, n)  # class labels: one-hot targets
        np.testing.assert_allclose(call(output, labels)[0], call(output, np.eye(c)[labels])[0], **TOL[dtype])


def test_binary_cross_entropy_is_stable_for_huge_logits():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grad = binary_cross_entropy(np.array([[1e4, -1e4]], np.float32), np.array([[0.0, 0.0]]))
    np.testing.assert_allclose(loss, 5e3, rtol=1e-6)
    np.testing.assert_allclose(grad, [[0.5, 0.0]])


def test_cpu_kernels_take_the_options():
    logits, labels = np.array([[0.3, 1.0, -2.0], [2.0, 0.1, 0.0]]), np.array([1, 2])
    loss, correct, grad, predicted = KERNELS["cross_entropy"](logits, labels, True, 0.1, [1.0, 2.0, 0.5])
    expected = cross_entropy(logits, labels, 0.1, [1.0, 2.0, 0.5])
    assert (loss, correct) == (expected[0], 1) and predicted.tolist() == [1, 0]
    np.testing.assert_array_equal(grad, expected[1])
    assert KERNELS["smooth_l1"](logits, labels, False, 0.5)[0] == smooth_l1(logits, labels, 0.5)[0]


@pytest.mark.parametrize("kind", ["cross_entropy", "cross_entropy_from_probabilities"])
def test_cuda_cross_entropy_with_options(cuda_backend, kind):
    from cnnrun.engine.losses_cuda import DeviceLoss

    rng = np.random.default_rng(3)
    output = rng.standard_normal((70, 4)) * 3  # 70 rows: grid-stride over 64 threads
    if kind == "cross_entropy_from_probabilities":
        output = np.exp(output) / np.exp(output).sum(axis=1, keepdims=True)
    labels, weight = rng.integers(0, 4, 70), [0.5, 1.0, 2.0, 0.0]
    function = cross_entropy if kind == "cross_entropy" else cross_entropy_from_probabilities
    loss, grad = function(output, labels, 0.15, weight)
    value, correct, device_grad, _ = DeviceLoss(kind)(cuda_backend.asarray(output, np.float64), labels, True, 0.15,
                                                      weight)
    np.testing.assert_allclose(value, loss, rtol=1e-12)
    np.testing.assert_allclose(device_grad.copy_to_host(), grad, rtol=1e-12, atol=1e-14)
    assert correct == np.count_nonzero(np.argmax(output, axis=1) == labels)


# -- BatchLoss: names, JSON objects, Loss classes, Python functions -------------------------------------------------
@pytest.fixture(scope="module")
def linear():
    return Network.from_config({"input": {"shape": [3]}, "layers": [{"type": "linear", "out_features": 4}]},
                               dtype="float64")


def test_batch_loss_from_a_name_an_object_a_class_and_a_function(linear, registries):
    x, labels = np.random.default_rng(0).standard_normal((5, 3)), np.array([0, 1, 2, 3, 0])
    output = linear.forward(x)
    expected = cross_entropy(output, labels, 0.1)
    value, correct, grad, predicted = BatchLoss(linear, {"type": "cross_entropy", "label_smoothing": 0.1},
                                                registries.losses)(output, labels, predictions=True)
    assert value == expected[0] and correct == np.count_nonzero(predicted == labels)
    np.testing.assert_array_equal(grad, expected[1])
    assert BatchLoss(linear, "l1", registries.losses)(output, labels)[0] == l1(output, labels)[0]
    assert BatchLoss(linear, type(make_loss("mse", registries.losses)))(output, labels)[0] == mse(output, labels)[0]
    calls = []

    def halved_mse(outputs, targets):
        calls.append(targets)
        loss, grad = mse(outputs, targets)
        return loss / 2, grad / 2

    targets = np.random.default_rng(1).standard_normal((5, 4))  # regression targets: no accuracy
    value, correct, grad, _ = BatchLoss(linear, halved_mse)(output, targets)
    assert (value, correct, len(calls)) == (mse(output, targets)[0] / 2, None, 1)
    np.testing.assert_array_equal(grad, mse(output, targets)[1] / 2)


@pytest.mark.parametrize("spec, message", [
    ("hinge", r"train.loss: unknown loss 'hinge'"),
    ({"type": "smooth_l1", "betta": 1}, r"train.loss \(smooth_l1\): unknown key 'betta' \(did you mean 'beta'\?\)"),
    ({"type": "cross_entropy", "label_smoothing": 2}, r"label_smoothing must be in \[0, 1\]; got label_smoothing=2"),
    ({"type": "cross_entropy", "weight": [1, -1, 1, 1]}, r"weight must be a list of numbers >= 0, one per class"),
    ({"type": "cross_entropy", "weight": [1, 1]}, r"train.loss \(cross_entropy\): weight has 2 numbers; the "
                                                  r"network has \(4,\) outputs, one per class"),
    ({"label_smoothing": 0.1}, r"train.loss: must be a loss name or an object with a \"type\""),
])
def test_batch_loss_errors(linear, registries, spec, message):
    with pytest.raises(ConfigError, match=message):
        BatchLoss(linear, spec, registries.losses)


def test_a_function_returning_a_wrong_gradient_is_a_clear_error(linear):
    def bad(outputs, targets):
        return 0.0, np.zeros(2)

    with pytest.raises(CnnrunError, match=r"loss 'bad' returned a gradient of shape \(2,\) for an output of shape"):
        BatchLoss(linear, bad)(linear.forward(np.zeros((2, 3))), np.array([0, 1]))


def test_host_losses_run_on_cuda(cuda_backend, registries):
    """A loss without a CUDA kernel (l1) gets host copies of the output; its gradient goes back to the GPU."""
    net = Network.from_config({"input": {"shape": [3]}, "layers": [{"type": "linear", "out_features": 4}]},
                              dtype="float64", registry=registries.layers)
    x, labels = np.random.default_rng(0).standard_normal((5, 3)), np.array([0, 1, 2, 3, 0])
    expected = BatchLoss(net, "l1", registries.losses)(net.forward(x), labels)
    net.to(cuda_backend)
    value, correct, grad, _ = BatchLoss(net, "l1", registries.losses)(net.forward(x), labels)
    assert (value, correct) == expected[:2] and cuda_backend.holds(grad)
    np.testing.assert_array_equal(grad.copy_to_host(), expected[2])


# -- a plugin's loss from JSON ----------------------------------------------------------------------------------------
class ScaledMSE(Loss):
    """scale * mse: the test plugin's loss."""

    type_name = "test_scaled_mse"
    calls = 0

    def __init__(self, scale=1.0):
        self.scale = scale

    def __call__(self, output, target):
        ScaledMSE.calls += 1
        loss, grad = mse(output, target)
        return self.scale * loss, self.scale * grad


class LossPlugin:
    @hookimpl
    def cnnrun_register_losses(self, register):
        register(ScaledMSE)


def test_a_plugin_loss_trains_from_a_network_file(plugin_manager, tmp_path, prepare):
    plugin_manager.register(LossPlugin(), name="test-losses")
    registries = Registries.from_plugin_manager(plugin_manager)
    assert registries.losses.providers["test_scaled_mse"] == "test-losses"
    path = tmp_path / "net.json"
    path.write_text(json.dumps({"input": {"shape": [1, 8, 8]}, "layers": [
        {"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 10}],
        "train": {"loss": {"type": "test_scaled_mse", "scale": 3.0}, "epochs": 1, "batch_size": 512}}))
    result = train(path, out=tmp_path / "run", registries=registries)
    assert ScaledMSE.calls > 0
    validation = prepare({"type": "digits"}, (1, 8, 8), validation_split=0.2)[1]  # the run's split (seed 0)
    np.testing.assert_allclose(result.metrics[0]["val_loss"], 3 * result.network.evaluate(validation.x, validation.y, loss="mse")["loss"],
                               rtol=1e-6)
    path.write_text(path.read_text().replace("test_scaled_mse", "test_scaled_mse2"))
    with pytest.raises(ConfigError, match=r"net\.json: train\.loss: unknown loss 'test_scaled_mse2' \(did you mean "
                                          r"'test_scaled_mse'\?\)"):
        train(path, out=tmp_path / "run2", registries=registries)


def test_a_plugin_cannot_take_a_builtin_loss_name(plugin_manager):
    class Clash(Loss):
        type_name = "mse"

    class ClashPlugin:
        @hookimpl
        def cnnrun_register_losses(self, register):
            register(Clash)

    plugin_manager.register(ClashPlugin(), name="clash")
    with pytest.raises(PluginError, match="loss 'mse' is registered by two plugins: 'cnnrun.plugins.losses' and "
                                          "'clash'"):
        Registries.from_plugin_manager(plugin_manager, strict=True)


def test_cnnrun_plugins_lists_the_losses(plugin_manager):
    from cnnrun.engine.plugins import plugin_infos

    infos = {info.name: info for info in plugin_infos(plugin_manager, Registries.from_plugin_manager(plugin_manager))}
    assert infos["cnnrun.plugins.losses"].losses == ["binary_cross_entropy", "cross_entropy", "l1", "mse", "smooth_l1"]
