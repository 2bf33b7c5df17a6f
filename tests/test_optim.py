"""Optimizers and learning-rate schedules: hand-computed steps, checkpoint state, option errors."""

import tracemalloc

import numpy as np
import pytest

from cnnrun.engine import CnnrunError, ConfigError
from cnnrun.engine.optim import make_optimizer
from cnnrun.engine.plugins import OptimizerRegistry
from cnnrun.engine.schedules import check_schedule, lr_at


@pytest.fixture
def optimizers(plugin_manager):
    return OptimizerRegistry.from_plugin_manager(plugin_manager)


def run(optimizers, config, p0, grads, lr=None, dtype="float64"):
    """The parameter after each step of the optimizer ``config`` from ``p0`` with these ``grads``."""
    opt = make_optimizer(config, optimizers)
    params = {"fc": {"weight": np.array(p0, dtype=dtype)}}
    history = []
    for g in grads:
        grad = {"fc": {"weight": np.array(g, dtype=dtype)}}
        opt.apply(params, grad, opt.lr if lr is None else lr)
        history.append(params["fc"]["weight"].copy())
    return history


# -- hand-computed steps ------------------------------------------------------------------------
# p0 = [1, 1]; gradients [1, -2], [0.5, 0.5], [0, 1]; lr = 0.1.
SGD_GRADS = [[1.0, -2.0], [0.5, 0.5], [0.0, 1.0]]
SGD_CASES = {
    # p -= 0.1 g
    "plain": ({}, [[0.9, 1.2], [0.85, 1.15], [0.85, 1.05]]),
    # buf = g; buf = [0.9 + 0.5, -1.8 + 0.5] = [1.4, -1.3]; buf = [1.26, -1.17 + 1] = [1.26, -0.17]
    "momentum": ({"momentum": 0.9}, [[0.9, 1.2], [0.76, 1.33], [0.634, 1.347]]),
    # first step undamped: buf = g; buf = 0.9 [1, -2] + 0.5 [0.5, 0.5] = [1.15, -1.55];
    # buf = 0.9 [1.15, -1.55] + 0.5 [0, 1] = [1.035, -0.895]
    "dampening": ({"momentum": 0.9, "dampening": 0.5}, [[0.9, 1.2], [0.785, 1.355], [0.6815, 1.4445]]),
    # d = g + 0.9 buf: [1.9, -3.8]; [0.5 + 1.26, 0.5 - 1.17] = [1.76, -0.67]; [1.134, 1 - 0.153]
    "nesterov": ({"momentum": 0.9, "nesterov": True}, [[0.81, 1.38], [0.634, 1.447], [0.5206, 1.3623]]),
    # d = g + 0.1 p: [1.1, -1.9]; [0.589, 0.619]; [0.08311, 1.11281]
    # (last: p = [0.8311 - 0.008311, 1.1281 - 0.111281])
    "weight_decay": ({"weight_decay": 0.1}, [[0.89, 1.19], [0.8311, 1.1281], [0.822789, 1.016819]]),
    # d as above with p from this run: [1.1, -1.9] -> buf [1.1, -1.9]; d [0.589, 0.619] ->
    # buf [1.579, -1.091]; d [0.07321, 1.12991] -> buf [1.49431, 0.14801]
    "momentum_weight_decay": ({"momentum": 0.9, "weight_decay": 0.1},
                              [[0.89, 1.19], [0.7321, 1.2991], [0.582669, 1.284299]]),
}


@pytest.mark.parametrize("case", SGD_CASES)
def test_sgd_steps(optimizers, case):
    options, expected = SGD_CASES[case]
    history = run(optimizers, {"type": "sgd", "lr": 0.1, **options}, [1.0, 1.0], SGD_GRADS)
    np.testing.assert_allclose(history, expected, rtol=1e-13, atol=1e-15)


# p0 = [1, -1]; gradients [2, -0.5], [-1, 0.25], [0.5, 0]. Per step: m = b1 m + (1 - b1) g,
# v = b2 v + (1 - b2) g^2, p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
ADAM_GRADS = [[2.0, -0.5], [-1.0, 0.25], [0.5, 0.0]]
ADAM_CASES = {
    # t=1: m^ = g, v^ = g^2: p = 1 - 0.1 * 2 / (2 + 1e-8) = 0.9000000005.
    # t=2 (first entry): m = 0.08, v = 0.004996, m^ = 0.08 / 0.19, v^ = 0.004996 / 0.001999.
    "adam": ({"lr": 0.1}, None,
             [[0.9000000005, -0.900000002], [0.8733662967024315, -0.8733662987078463],
              [0.8393233821389426, -0.8527783689874682]]),
    # betas (0.5, 0.75), eps 0.5, first entry: t=1: m = 1, v = 1, m^ = 2, v^ = 4,
    # p = 1 - 0.1 * 2 / (2 + 0.5) = 0.92; t=2: m = 0 (no move); t=3: m = 0.25, v = 0.8125,
    # m^ = 0.25 / 0.875, v^ = 0.8125 / 0.578125.
    "adam_eps_betas": ({"lr": 0.1, "betas": [0.5, 0.75], "eps": 0.5}, None,
                       [[0.92, -0.95], [0.92, -0.95], [0.9030486720809205, -0.95]]),
    # L2: g = grad + 0.1 p; t=1: g = 2.1, p = 1 - 0.1 * 2.1 / (2.1 + 1e-8).
    "adam_l2": ({"lr": 0.1, "weight_decay": 0.1}, None,
                [[0.9000000004761904, -0.9000000016666666], [0.8681231891743804, -0.8544413674617625],
                 [0.8283762644332224, -0.810837564131554]]),
    # decoupled, lr 0.05 passed by the trainer (not the configured 0.1): p *= 1 - 0.05 * 0.1,
    # then the adam step: t=1: p = 0.995 - 0.05 * 2 / (2 + 1e-8) = 0.94500000025.
    "adamw": ({"type": "adamw", "lr": 0.1, "weight_decay": 0.1}, 0.05,
              [[0.94500000025, -0.9450000009999999], [0.9269581483499658, -0.9269581493489232],
               [0.9053019003264715, -0.9120293937419894]]),
}


@pytest.mark.parametrize("case", ADAM_CASES)
def test_adam_steps(optimizers, case):
    options, lr, expected = ADAM_CASES[case]
    history = run(optimizers, {"type": "adam", **options}, [1.0, -1.0], ADAM_GRADS, lr=lr)
    np.testing.assert_allclose(history, expected, rtol=1e-13)


def test_defaults(optimizers):
    adam = make_optimizer({"type": "adam"}, optimizers)
    assert (adam.lr, adam.betas, adam.eps, adam.weight_decay) == (0.001, (0.9, 0.999), 1e-8, 0.0)
    adamw = make_optimizer({"type": "adamw"}, optimizers)
    assert (adamw.lr, adamw.betas, adamw.eps, adamw.weight_decay) == (0.001, (0.9, 0.999), 1e-8, 0.01)
    sgd = make_optimizer({"type": "sgd", "lr": 0.5}, optimizers)
    assert (sgd.momentum, sgd.dampening, sgd.nesterov, sgd.weight_decay) == (0.0, 0.0, False, 0.0)
    assert sgd.slots == () and make_optimizer({"type": "sgd", "lr": 1, "momentum": 0.5}, optimizers).slots


def test_registered_by_the_builtin_plugin(optimizers):
    assert sorted(optimizers.classes) == ["adam", "adamw", "sgd"]
    assert set(optimizers.providers.values()) == {"cnnrun.plugins.optimizers"}


CONFIGS = [{"type": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
           {"type": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.3},
           {"type": "adam", "lr": 0.01, "weight_decay": 0.01},
           {"type": "adamw", "lr": 0.01}]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["type"])
def test_float32_in_place_and_grads_untouched(optimizers, rng, config):
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(3)]
    expected = run(optimizers, config, p0, grads)
    opt = make_optimizer(config, optimizers)
    p = p0.astype(np.float32)
    params = {"fc": {"weight": p}}
    for g in grads:
        g32 = g.astype(np.float32)
        opt.apply(params, {"fc": {"weight": g32}}, opt.lr)
        np.testing.assert_array_equal(g32, g.astype(np.float32))
    assert params["fc"]["weight"] is p and p.dtype == np.float32
    assert all(a.dtype == np.float32 for a in opt.state_arrays().values())
    np.testing.assert_allclose(p, expected[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["type"])
def test_steps_allocate_nothing_after_the_first(optimizers, config):
    params = {"a": {"weight": np.ones(100_000), "bias": np.ones(10)}, "b": {"weight": np.ones((300, 100))}}
    grads = {k: {n: np.full_like(p, 0.5) for n, p in v.items()} for k, v in params.items()}
    opt = make_optimizer(config, optimizers)
    opt.apply(params, grads, 0.1)
    tracemalloc.start()
    try:
        opt.apply(params, grads, 0.1)
        opt.apply(params, grads, 0.1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000  # bytes; one parameter-sized temporary would be 800,000


# -- checkpoint state ---------------------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["type"])
def test_state_round_trip_continues_identically(optimizers, rng, config):
    params = {"conv1": {"weight": rng.standard_normal((2, 3)), "bias": rng.standard_normal(2)},
              "fc": {"weight": rng.standard_normal(4)}}
    grads = [{k: {n: rng.standard_normal(p.shape) for n, p in v.items()} for k, v in params.items()}
             for _ in range(5)]
    first = make_optimizer(config, optimizers)
    for g in grads[:2]:
        first.apply(params, g, 0.05)
    arrays = {k: v.copy() for k, v in first.state_arrays().items()}
    expected_keys = {f"{layer}/{name}/{slot}" for layer, v in params.items() for name in v
                     for slot in first.slots}
    assert set(arrays) == expected_keys and expected_keys
    resumed = make_optimizer(config, optimizers)
    resumed.load_state_arrays(arrays, first.step, params)
    copy = {k: {n: p.copy() for n, p in v.items()} for k, v in params.items()}
    for g in grads[2:]:
        first.apply(params, g, 0.05)
        resumed.apply(copy, g, 0.05)
    assert resumed.step == first.step == 5
    for layer, v in params.items():
        for name, p in v.items():
            np.testing.assert_array_equal(copy[layer][name], p)


def adam_state(optimizers, params):
    opt = make_optimizer({"type": "adam"}, optimizers)
    opt.apply(params, {"fc": {"weight": np.ones(3)}}, 0.1)
    return opt.state_arrays()


def test_load_state_errors(optimizers):
    params = {"fc": {"weight": np.zeros(3)}}
    arrays = adam_state(optimizers, params)
    sgd = make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.9}, optimizers)
    with pytest.raises(CnnrunError, match=r"unknown key 'fc/weight/exp_avg'; sgd keeps .*momentum_buffer"):
        sgd.load_state_arrays(arrays, 1)
    adam = make_optimizer({"type": "adam"}, optimizers)
    with pytest.raises(CnnrunError, match="unknown key 'weight'"):
        adam.load_state_arrays({"weight": np.zeros(3)}, 1)
    with pytest.raises(CnnrunError, match="step must be an integer >= 0; got step=-1"):
        adam.load_state_arrays(arrays, -1)
    with pytest.raises(CnnrunError, match="'fc/weight' is not a trainable parameter of the network"):
        adam.load_state_arrays(arrays, 1, {"conv": {"weight": np.zeros(3)}})
    with pytest.raises(CnnrunError, match=r"'fc/weight/exp_avg' has shape \[3\], the parameter \[2, 2\]"):
        adam.load_state_arrays(arrays, 1, {"fc": {"weight": np.zeros((2, 2))}})
    with pytest.raises(CnnrunError, match=r"'fc/bias/exp_avg' is missing \(state saved at step 1\)"):
        adam.load_state_arrays(arrays, 1, {"fc": {"weight": np.zeros(3), "bias": np.zeros(1)}})


def test_loaded_state_is_checked_on_the_first_apply(optimizers):
    arrays = adam_state(optimizers, {"fc": {"weight": np.zeros(3)}})
    adam = make_optimizer({"type": "adam"}, optimizers)
    adam.load_state_arrays(arrays, 1)
    params = {"fc": {"weight": np.zeros(4)}}
    with pytest.raises(CnnrunError, match=r"has shape \[3\], the parameter \[4\]"):
        adam.apply(params, {"fc": {"weight": np.ones(4)}}, 0.1)


# -- option errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("config, message", [
    ({"type": "sgdd", "lr": 0.1}, r"train.optimizer: unknown optimizer 'sgdd' \(did you mean 'sgd'\?\)"),
    ({"lr": 0.1}, r"train.optimizer: must be an object with a \"type\" \(one of: adam, adamw, sgd\)"),
    ("sgd", r"train.optimizer: must be an object .*; got \"sgd\""),
    ({"type": "sgd"}, r"train.optimizer \(sgd\): missing required key 'lr'"),
    ({"type": "sgd", "lr": 0.1, "momentun": 0.9},
     r"train.optimizer \(sgd\): unknown key 'momentun' \(did you mean 'momentum'\?\); sgd accepts: lr, "),
    ({"type": "sgd", "lr": 0}, r"train.optimizer \(sgd\): lr must be in \(0, inf\); got lr=0$"),
    ({"type": "adam", "lr": "0.1"}, r"lr must be a finite number; got lr=\"0.1\""),
    ({"type": "sgd", "lr": 0.1, "momentum": 1.0}, r"momentum must be in \[0, 1\); got momentum=1.0"),
    ({"type": "sgd", "lr": 0.1, "dampening": -0.1}, r"dampening must be in \[0, 1\]; got dampening=-0.1"),
    ({"type": "sgd", "lr": 0.1, "nesterov": 1}, r"nesterov must be true or false; got nesterov=1"),
    ({"type": "sgd", "lr": 0.1, "nesterov": True},
     r"nesterov needs momentum > 0 and dampening = 0; got momentum=0.0, dampening=0.0"),
    ({"type": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},
     r"got momentum=0.9, dampening=0.1"),
    ({"type": "sgd", "lr": 0.1, "weight_decay": -1},
     r"weight_decay must be in \[0, inf\); got weight_decay=-1"),
    ({"type": "adam", "betas": [0.9, 1.0]},
     r"train.optimizer \(adam\): betas must be a list of two numbers in \[0, 1\); got betas=\[0.9, 1.0\]"),
    ({"type": "adamw", "betas": 0.9}, r"train.optimizer \(adamw\): betas must be .*; got betas=0.9"),
    ({"type": "adam", "eps": 0}, r"eps must be in \(0, inf\); got eps=0"),
    ({"type": "adamw", "weight_decay": -0.01}, r"weight_decay must be in \[0, inf\); got weight_decay=-0.01"),
])
def test_option_errors(optimizers, config, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_optimizer(config, optimizers)
    assert info.value.section.startswith("train.optimizer")


# -- schedules ----------------------------------------------------------------------------------
SCHEDULE_CASES = {
    "default": (None, 5, 0.1, [0.1, 0.1, 0.1, 0.1, 0.1]),
    "constant": ({"type": "constant"}, 3, 0.1, [0.1, 0.1, 0.1]),
    # base * gamma ** ((e - 1) // step_size)
    "step": ({"type": "step", "step_size": 2, "gamma": 0.5}, 5, 1.0, [1.0, 1.0, 0.5, 0.5, 0.25]),
    "step_default_gamma": ({"type": "step", "step_size": 1}, 3, 2.0, [2.0, 0.2, 0.02]),
    # (1 + cos(pi t / 5)) / 2 for t = 0..4; cos(pi/5) = (1 + sqrt 5) / 4 = 0.80901699437
    "cosine": ({"type": "cosine"}, 5, 1.0,
               [1.0, 0.904508497187, 0.654508497187, 0.345491502813, 0.095491502813]),
    # 0.1 + (1.1 - 0.1) (1 + cos(pi t / 2)) / 2
    "cosine_min_lr": ({"type": "cosine", "min_lr": 0.1}, 2, 1.1, [1.1, 0.6]),
    # warmup base * e / W, then the schedule
    "constant_warmup": ({"warmup_epochs": 4}, 6, 1.0, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]),
    "step_warmup": ({"type": "step", "step_size": 1, "warmup_epochs": 1}, 4, 1.0, [1.0, 1.0, 0.1, 0.01]),
    # warmup 2 epochs, then T = 4: (1 + cos(pi t / 4)) / 2 = 1, 0.853553390593, 0.5, 0.146446609407
    "cosine_warmup": ({"type": "cosine", "warmup_epochs": 2}, 6, 1.0,
                      [0.5, 1.0, 1.0, 0.853553390593, 0.5, 0.146446609407]),
    "all_warmup": ({"type": "cosine", "warmup_epochs": 2}, 2, 0.2, [0.1, 0.2]),
}


@pytest.mark.parametrize("case", SCHEDULE_CASES)
def test_schedule_values(case):
    schedule, total, base, expected = SCHEDULE_CASES[case]
    check_schedule(schedule, total)
    got = [lr_at(e, base, schedule, total) for e in range(1, total + 1)]
    assert all(type(lr) is float for lr in got)
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("schedule, total, message", [
    ("cosine", 5, r'train.schedule: must be an object; got "cosine"'),
    ({"type": "cosin"}, 5,
     r"""unknown schedule type "cosin" \(did you mean 'cosine'\?\); known: "constant", "step", "cosine"$"""),
    ({"type": "step"}, 5, r"train.schedule: missing required key 'step_size'"),
    ({"type": "step", "step_sise": 2}, 5,
     r"unknown key 'step_sise' \(did you mean 'step_size'\?\); step accepts: step_size, gamma, warmup_"),
    ({"type": "step", "step_size": 0}, 5, r"step_size must be >= 1; got step_size=0"),
    ({"type": "step", "step_size": 2.5}, 5, r"step_size must be an integer; got step_size=2.5"),
    ({"type": "step", "step_size": 2, "gamma": 0}, 5, r"gamma must be in \(0, inf\); got gamma=0"),
    ({"type": "cosine", "min_lr": -1}, 5, r"min_lr must be in \[0, inf\); got min_lr=-1"),
    ({"warmup_epochs": -1}, 5, r"warmup_epochs must be >= 0; got warmup_epochs=-1"),
    ({"warmup_epochs": True}, 5, r"warmup_epochs must be an integer; got warmup_epochs=true"),
    ({"warmup_epochs": 6}, 5, r"warmup_epochs \(6\) must be <= the number of epochs \(5\)"),
])
def test_schedule_errors(schedule, total, message):
    with pytest.raises(ConfigError, match=message) as info:
        check_schedule(schedule, total)
    assert info.value.section == "train.schedule"


def test_schedule_min_lr_above_base_lr():
    schedule = {"type": "cosine", "min_lr": 0.5}
    check_schedule(schedule, 3)  # base lr unknown: nothing to compare
    with pytest.raises(ConfigError, match=r"min_lr \(0.5\) must be <= the optimizer's lr \(0.1\)"):
        check_schedule(schedule, 3, base_lr=0.1)
    with pytest.raises(ConfigError, match="min_lr"):
        lr_at(1, 0.1, schedule, 3)


def test_lr_at_rejects_epochs_outside_the_run():
    with pytest.raises(ValueError, match=r"epoch must be in \[1, 3\]; got 0"):
        lr_at(0, 0.1, None, 3)
    with pytest.raises(ValueError, match=r"got 4"):
        lr_at(4, 0.1, None, 3)
