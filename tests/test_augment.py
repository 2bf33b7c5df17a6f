"""Augmentations (train.augment): each kernel against the slow reference over random
configurations, the parameter draws against torchvision's algorithms, seeding, config errors."""

import numpy as np
import pytest

import reference_augment as ref
from cnnrun.engine import ConfigError
from cnnrun.engine.augment import AUGMENTATIONS, make_augmenter

CONFIGURATIONS = 6


def batch(rng, n=5, c=3, h=7, w=6):
    return rng.random((n, c, h, w), dtype=np.float32)


def one(spec):
    return make_augmenter([spec]).steps[0]


def test_random_crop_matches_padding_then_slicing(rng):
    for _ in range(CONFIGURATIONS):
        x = batch(rng, h=int(rng.integers(3, 9)), w=int(rng.integers(3, 9)))
        padding = [int(rng.integers(0, 3)), int(rng.integers(0, 3))]
        size = [int(rng.integers(1, x.shape[2] + 2 * padding[0] + 1)), int(rng.integers(1, x.shape[3] + 1))]
        for mode in ("zero", "reflect"):
            step = one({"type": "random_crop", "size": size, "padding": padding, "padding_mode": mode})
            params = step.draw(len(x), x.shape[1:], rng)
            expected = ref.random_crop(x, params["top"], params["left"], size, padding, mode)
            np.testing.assert_array_equal(step.apply(x, params), expected.astype(np.float32))


def test_random_crop_positions_are_uniform_and_size_defaults_to_the_input(rng):
    step = one({"type": "random_crop", "padding": 2})
    params = step.draw(4000, (3, 5, 5), rng)
    for key in ("top", "left"):
        counts = np.bincount(params[key], minlength=5)
        assert len(counts) == 5 and counts.min() > 700
    assert step.output_shape((3, 5, 5)) == (3, 5, 5)


@pytest.mark.parametrize("kind, horizontal", [("horizontal_flip", True), ("vertical_flip", False)])
def test_flips_match_the_reference_and_happen_with_probability_p(rng, kind, horizontal):
    x = batch(rng, n=40)
    for p in (0.0, 0.3, 1.0):
        step = one({"type": kind, "p": p})
        params = step.draw(len(x), x.shape[1:], rng)
        np.testing.assert_array_equal(step.apply(x, params), ref.flip(x, params["flip"], horizontal))
        if p in (0.0, 1.0):
            assert params["flip"].all() == bool(p) and params["flip"].any() == bool(p)
    flips = one({"type": kind}).draw(10000, x.shape[1:], rng)["flip"]
    assert abs(flips.mean() - 0.5) < 0.03


def test_random_resized_crop_matches_the_reference(rng):
    for _ in range(CONFIGURATIONS):
        x = batch(rng, h=int(rng.integers(4, 12)), w=int(rng.integers(4, 12)))
        size = [int(rng.integers(1, 10)), int(rng.integers(1, 10))]
        low = float(rng.uniform(0.05, 0.9))
        step = one({"type": "random_resized_crop", "size": size, "scale": [low, 1.0]})
        params = step.draw(len(x), x.shape[1:], rng)
        expected = ref.resized_crop(x, params["top"], params["left"], params["height"], params["width"], size)
        np.testing.assert_allclose(step.apply(x, params), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, scale, ratio", [((3, 20, 30), (0.08, 1.0), (3 / 4, 4 / 3)),
                                                 ((1, 9, 9), (0.9, 1.0), (3.0, 4.0)),      # always falls back
                                                 ((1, 9, 4), (0.95, 1.0), (0.2, 0.3)),
                                                 ((2, 6, 6), (0.5, 1.0), (1.0, 1.0))])
def test_random_resized_crop_boxes_are_torchvision_s(shape, scale, ratio):
    step = one({"type": "random_resized_crop", "scale": list(scale), "ratio": list(ratio)})
    params = step.draw(50, shape, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    boxes = ref.torchvision_box(rng, 50, shape[1], shape[2], scale, ratio, erasing=False)
    h, w = np.array([b[0] for b in boxes]), np.array([b[1] for b in boxes])
    top, left = rng.integers(0, shape[1] - h + 1), rng.integers(0, shape[2] - w + 1)
    for k, (_, _, found) in enumerate(boxes):
        if not found:
            top[k], left[k] = (shape[1] - h[k]) // 2, (shape[2] - w[k]) // 2
    np.testing.assert_array_equal(params["height"], h)
    np.testing.assert_array_equal(params["width"], w)
    np.testing.assert_array_equal(params["top"], top)
    np.testing.assert_array_equal(params["left"], left)
    assert (params["top"] + h <= shape[1]).all() and (params["left"] + w <= shape[2]).all()


def test_color_jitter_matches_the_reference(rng):
    for _ in range(CONFIGURATIONS):
        amounts = [float(v) if rng.random() < 0.7 else 0.0 for v in rng.uniform(0, 1.5, size=3)]
        for channels in (1, 3):
            x = batch(rng, c=channels)
            step = one({"type": "color_jitter", **dict(zip(("brightness", "contrast", "saturation"), amounts))})
            params = step.draw(len(x), x.shape[1:], rng)
            np.testing.assert_allclose(step.apply(x, params), ref.color_jitter(x, params["factors"], params["order"]),
                                       rtol=1e-5, atol=1e-6)
            enabled = [k for k in range(3) if amounts[k] > 0]
            assert all(sorted(row) == enabled for row in params["order"].tolist())
            for k in range(3):
                low, high = (max(0, 1 - amounts[k]), 1 + amounts[k])
                assert ((params["factors"][:, k] >= low) & (params["factors"][:, k] <= high)).all()


def test_color_jitter_orders_vary_per_sample(rng):
    order = one({"type": "color_jitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2}).draw(
        600, (3, 2, 2), rng)["order"]
    assert len({tuple(row) for row in order.tolist()}) == 6


def test_normalize_matches_the_reference(rng):
    x = batch(rng)
    for mean, std in (([0.4, 0.5, 0.6], [0.2, 0.3, 0.25]), (0.5, 2.0)):
        step = one({"type": "normalize", "mean": mean, "std": std})
        np.testing.assert_allclose(step.apply(x, step.draw(len(x), x.shape[1:], rng)), ref.normalize(x, mean, std),
                                   rtol=1e-6, atol=1e-6)


def test_random_erasing_matches_the_reference_and_torchvision_s_boxes(rng):
    for _ in range(CONFIGURATIONS):
        x = batch(rng, n=8, h=int(rng.integers(3, 12)), w=int(rng.integers(3, 12)))
        p, value = float(rng.uniform(0.2, 1.0)), float(rng.uniform(-1, 1))
        step = one({"type": "random_erasing", "p": p, "value": value})
        seed = int(rng.integers(1000))
        params = step.draw(len(x), x.shape[1:], np.random.default_rng(seed))
        expected = ref.erase(x, params["top"], params["left"], params["height"], params["width"], np.float32(value))
        np.testing.assert_array_equal(step.apply(x, params), expected)
        replay = np.random.default_rng(seed)
        erase = replay.random(len(x)) < p
        boxes = ref.torchvision_box(replay, len(x), x.shape[2], x.shape[3], (0.02, 0.33), (0.3, 3.3), erasing=True)
        h = np.where(erase, [b[0] for b in boxes], 0)
        w = np.where(erase, [b[1] for b in boxes], 0)
        np.testing.assert_array_equal(params["height"], h)
        np.testing.assert_array_equal(params["width"], w)
        np.testing.assert_array_equal(params["top"], replay.integers(0, x.shape[2] - h + 1))
        np.testing.assert_array_equal(params["left"], replay.integers(0, x.shape[3] - w + 1))


EVERYTHING = [{"type": "random_resized_crop", "size": [6, 6], "scale": [0.3, 1.0]},
              {"type": "random_crop", "padding": 1, "padding_mode": "reflect"},
              {"type": "horizontal_flip"}, {"type": "vertical_flip", "p": 0.3},
              {"type": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4},
              {"type": "random_erasing", "p": 0.7},
              {"type": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}]


def test_every_augmentation_is_listed_and_the_same_generator_state_gives_the_same_batch(rng):
    assert {spec["type"] for spec in EVERYTHING} == set(AUGMENTATIONS)
    augmenter = make_augmenter(EVERYTHING)
    assert augmenter.output_shape((3, 9, 8)) == (3, 6, 6)
    x = batch(rng, n=16, h=9, w=8)
    first, second = np.random.default_rng(3), np.random.default_rng(3)
    a, b = augmenter(x, first), augmenter(x, second)
    assert a.shape == (16, 3, 6, 6) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert first.bit_generator.state == second.bit_generator.state
    assert not np.array_equal(augmenter(x, first), a)          # the generator moved on
    assert not np.array_equal(augmenter(x, np.random.default_rng(4)), a)
    np.testing.assert_array_equal(x, batch(np.random.default_rng(1234), n=16, h=9, w=8))  # input untouched


@pytest.mark.parametrize("specs, message", [
    ({"type": "horizontal_flip"}, r"^train.augment: must be a list of augmentations"),
    (["horizontal_flip"], r"^train.augment\[0\]: must be an object with a \"type\"; got \"horizontal_flip\""),
    ([{"type": "horizontal_flip"}, {"type": "random_crops"}],
     r"^train.augment\[1\]: unknown augmentation type \"random_crops\" \(did you mean 'random_crop'\?\)"),
    ([{"type": "random_crop", "pading": 4}],
     r"^train.augment\[0\] \(random_crop\): unknown key 'pading' \(did you mean 'padding'\?\); "
     r"random_crop accepts"),
    ([{"type": "random_crop", "padding_mode": "edge"}],
     r"^train.augment\[0\] \(random_crop\): padding_mode must be one of \"zero\", \"reflect\"; "
     r"got padding_mode=\"edge\""),
    ([{"type": "horizontal_flip", "p": 1.5}],
     r"^train.augment\[0\] \(horizontal_flip\): p must be in \[0.0, 1.0\]; got p=1.5"),
    ([{"type": "random_resized_crop", "scale": [0.9, 0.1]}],
     r"^train.augment\[0\] \(random_resized_crop\): scale must be \[min, max\] with min <= max; "
     r"got scale=\[0.9, 0.1\]"),
    ([{"type": "color_jitter", "contrast": -1}], r"contrast must be in \[0.0, inf\); got contrast=-1"),
    ([{"type": "normalize", "mean": [0.5]}], r"^train.augment\[0\] \(normalize\): missing required key 'std'"),
    ([{"type": "normalize", "mean": 0.5, "std": [1, 0]}], r"std must be in \(0.0, inf\); got std=0"),
    ([{"type": "random_erasing", "value": "random"}], r"value must be a finite number; got value=\"random\""),
    ([{"type": "normalize", "mean": 0.5, "std": 0.2}, {"type": "horizontal_flip"}],
     r"^train.augment\[0\] \(normalize\): must be the last augmentation"),
])
def test_bad_specs_are_one_line_naming_index_type_key_and_value(specs, message):
    with pytest.raises(ConfigError, match=message):
        make_augmenter(specs)


@pytest.mark.parametrize("specs, shape, message", [
    ([{"type": "horizontal_flip"}, {"type": "normalize", "mean": [0.5, 0.5], "std": 1}], (3, 8, 8),
     r"^train.augment\[1\] \(normalize\): mean has 2 values but the examples have 3 channels"),
    ([{"type": "random_crop", "size": 12, "padding": 1}], (3, 8, 8),
     r"^train.augment\[0\] \(random_crop\): size \[12, 12\] is larger than the padded image \[10, 10\]"),
    ([{"type": "random_crop", "padding": 4, "padding_mode": "reflect"}], (3, 4, 8),
     r"padding_mode \"reflect\" needs padding smaller than the image \[4, 8\]; got padding=\[4, 4\]"),
    ([{"type": "color_jitter", "saturation": 0.5}], (2, 8, 8), r"saturation need images of 1 or 3 channels"),
    ([{"type": "horizontal_flip"}], (16,), r"augmentation needs image examples \(C, H, W\); got shape \[16\]"),
])
def test_specs_that_do_not_fit_the_examples_are_one_line(specs, shape, message):
    with pytest.raises(ConfigError, match=message):
        make_augmenter(specs).output_shape(shape)
