"""Data sources (digits, npz, idx), the checks against the network, splits, normalization, batches."""

import gzip
import re
import struct

import numpy as np
import pytest

from cnnrun.engine import ConfigError, ShapeError
from cnnrun.engine.data import Examples, apply_normalization, batches, channel_statistics, stratified_split
from cnnrun.plugins.data.datasets import resize_bilinear


def save_npz(path, x, y):
    np.savez(path, x=x, y=y)
    return path


# -- naive references ------------------------------------------------------------------------------
def naive_bilinear(img, out_h, out_w):
    """PyTorch's upsample_bilinear2d (align_corners=False) for one 2-D image, pixel by pixel."""
    def source_index(i, in_size, out_size):
        src = (in_size / out_size) * (i + 0.5) - 0.5
        src = max(src, 0.0)
        i0 = int(src)
        i1 = i0 + 1 if i0 < in_size - 1 else i0
        return i0, i1, src - i0

    in_h, in_w = img.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        h0, h1, fh = source_index(i, in_h, out_h)
        for j in range(out_w):
            w0, w1, fw = source_index(j, in_w, out_w)
            out[i, j] = ((1 - fh) * ((1 - fw) * img[h0, w0] + fw * img[h0, w1])
                         + fh * ((1 - fw) * img[h1, w0] + fw * img[h1, w1]))
    return out


def write_idx(path, array, *, code=0x08, compress=False):
    """An IDX file written byte by byte: 0, 0, type code, ndim, big-endian uint32 sizes, data."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(">u1").tobytes()
    if compress:
        path, data = path.with_name(path.name + ".gz"), gzip.compress(data)
    path.write_bytes(data)
    return path


def write_mnist(folder, n_train=12, n_test=5, *, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 6, 5), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(folder / f"{split}-images-idx3-ubyte", images, compress=compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, compress=compress)
        arrays[split] = images, labels
    return arrays


# -- bilinear resize -------------------------------------------------------------------------------
def test_resize_matches_naive_reference(rng):
    for _ in range(25):
        in_h, in_w = rng.integers(1, 8, size=2)
        out_h, out_w = rng.integers(1, 12, size=2)
        x = rng.standard_normal((2, 3, in_h, in_w))
        got = resize_bilinear(x, (out_h, out_w))
        assert got.shape == (2, 3, out_h, out_w)
        for n in range(2):
            for c in range(3):
                np.testing.assert_allclose(got[n, c], naive_bilinear(x[n, c], out_h, out_w),
                                           rtol=1e-12, atol=1e-12)


def test_resize_literal_cases():
    x = np.array([[0.0, 1.0], [2.0, 3.0]])
    np.testing.assert_allclose(resize_bilinear(x, (4, 4)), [[0.0, 0.25, 0.75, 1.0],
                                                            [0.5, 0.75, 1.25, 1.5],
                                                            [1.5, 1.75, 2.25, 2.5],
                                                            [2.0, 2.25, 2.75, 3.0]])
    row = np.array([[1.0, 3.0, 7.0, 9.0]])
    np.testing.assert_allclose(resize_bilinear(row, (1, 2)), [[2.0, 8.0]])  # src 0.5 and 2.5
    row = np.array([[4.0, 8.0, 0.0]])
    np.testing.assert_allclose(resize_bilinear(row, (1, 2)), [[5.0, 2.0]])  # src 0.25 and 1.75
    np.testing.assert_allclose(resize_bilinear(x, (2, 2)), x)


# -- digits ----------------------------------------------------------------------------------------
def test_digits(prepare):
    train, validation, normalization, _ = prepare({"type": "digits"}, [1, 8, 8])
    assert validation is None and normalization is None
    assert train.x.shape == (1797, 1, 8, 8) and train.x.dtype == np.float32
    assert train.y.shape == (1797,) and train.y.dtype == np.int64
    assert train.x.min() == 0.0 and train.x.max() == 1.0
    np.testing.assert_array_equal(train.x * 16, np.round(train.x * 16))  # 0..16 scaled by 1/16
    assert sorted(set(train.y.tolist())) == list(range(10))


def test_digits_resize(prepare):
    plain, _, _, _ = prepare({"type": "digits"}, [1, 8, 8])
    train, _, _, _ = prepare({"type": "digits", "resize": [12, 10]}, [1, 12, 10])
    assert train.x.shape == (1797, 1, 12, 10) and train.x.dtype == np.float32
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0
    np.testing.assert_array_equal(train.y, plain.y)
    for i in (0, 1000):
        np.testing.assert_allclose(train.x[i, 0], naive_bilinear(plain.x[i, 0].astype(np.float64), 12, 10),
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("resize, match", [
    ([0, 5], r"train\.data \(digits\): resize must be positive; got resize=\[0, 5\]"),
    ([28], r"resize must be an integer or a list of 2 integers; got resize=\[28\]"),
])
def test_digits_bad_resize(prepare, resize, match):
    with pytest.raises(ConfigError, match=match):
        prepare({"type": "digits", "resize": resize}, [1, 28, 28])


# -- npz -------------------------------------------------------------------------------------------
def test_npz_without_validation_path(prepare, tmp_path):
    x = np.arange(6 * 2 * 3 * 3, dtype=np.int32).reshape(6, 2, 3, 3) * 100
    save_npz(tmp_path / "train.npz", x, np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8))
    train, validation, _, _ = prepare({"type": "npz", "path": "train.npz"}, [2, 3, 3])
    assert validation is None
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    np.testing.assert_array_equal(train.x, x)  # integers kept as they are, not scaled
    np.testing.assert_array_equal(train.y, [0, 1, 2, 0, 1, 2])


def test_npz_with_validation_path(prepare, tmp_path):
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    save_npz(tmp_path / "data" / "a.npz", rng.random((5, 4, 4)), np.arange(5))
    save_npz(tmp_path / "data" / "b.npz", rng.random((3, 4, 4)), np.array([2.0, 0.0, 1.0]))
    train, validation, _, _ = prepare({"type": "npz", "path": "data/a.npz",
                                    "validation_path": "data/b.npz"}, [1, 4, 4], validation_split=0.5)
    assert train.x.shape == (5, 1, 4, 4) and validation.x.shape == (3, 1, 4, 4)  # (N, H, W) + channel
    np.testing.assert_array_equal(validation.y, [2, 0, 1])  # integer-valued floats accepted


@pytest.mark.parametrize("x_shape, input_shape", [((4, 3, 7), [3, 7]), ((4, 9), [9]), ((4, 9), [1, 9])])
def test_npz_signals_and_features(prepare, tmp_path, x_shape, input_shape):
    save_npz(tmp_path / "d.npz", np.ones(x_shape), np.zeros(4, dtype=np.int64))
    train, _, _, _ = prepare({"type": "npz", "path": str(tmp_path / "d.npz")}, input_shape)
    assert train.x.shape == (4, *input_shape)


# -- idx -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True])
def test_idx_with_test_set(prepare, tmp_path, compress):
    arrays = write_mnist(tmp_path / "mnist", compress=compress)
    train, validation, _, _ = prepare({"type": "idx", "path": "mnist", "validation": "test"}, [1, 6, 5])
    for examples, (images, labels) in ((train, arrays["train"]), (validation, arrays["t10k"])):
        assert examples.x.dtype == np.float32 and examples.y.dtype == np.int64
        np.testing.assert_allclose(examples.x[:, 0], images / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(examples.y, labels)


def test_idx_split_and_limit(prepare, tmp_path):
    arrays = write_mnist(tmp_path / "mnist", n_train=40)
    train, validation, _, _ = prepare({"type": "idx", "path": "mnist", "limit": 30}, [1, 6, 5],
                                   validation_split=0.2)
    assert len(train) == 24 and len(validation) == 6  # 0.2 of the first 30 examples
    kept = {np.round(x * 255).astype(np.uint8).tobytes() for x in np.concatenate([train.x, validation.x])}
    assert kept == {image.tobytes() for image in arrays["train"][0][:30]}  # the first 30, each once


# -- errors ----------------------------------------------------------------------------------------
def test_npz_errors(prepare, tmp_path):
    def fails(x, y, match, input_shape=(1, 2, 2)):
        save_npz(tmp_path / "bad.npz", x, y)
        with pytest.raises(ConfigError, match=match):
            prepare({"type": "npz", "path": "bad.npz"}, input_shape)

    missing = tmp_path / "nowhere.npz"
    with pytest.raises(ConfigError, match=r"train\.data \(npz\): path: file not found: "
                                          + re.escape(str(missing))):
        prepare({"type": "npz", "path": "nowhere.npz"}, [1, 2, 2])
    bad = re.escape(str(tmp_path / "bad.npz"))
    fails(np.zeros((5, 2, 2)), np.zeros(4, dtype=int),
          rf"train\.data \(npz\): {bad}: x has 5 examples but y has shape \(4,\)")
    fails(np.zeros((3, 2, 2)), np.array([0.0, 2.5, 1.0]), rf"{bad}: y must hold integer .* got 2\.5 \(example 1\)")
    fails(np.zeros((2, 2, 2)), np.array(["a", "b"]), rf"{bad}: y must hold integer class labels; got dtype <U1")
    fails(np.zeros(6), np.zeros(6, dtype=int), rf"{bad}: x must be .*; got shape \(6,\)")
    fails(np.zeros((1, 1, 1, 1, 1)), np.zeros(1, dtype=int), rf"{bad}: x must be .*; got shape \(1, 1, 1, 1, 1\)")
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 2, 2)))
    with pytest.raises(ConfigError, match=rf"{bad}: no array 'y' \(arrays: x\)"):
        prepare({"type": "npz", "path": "bad.npz"}, [1, 2, 2])
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "plain.npy")) + r": is a \.npy file \(one array\), not an \.npz file"):
        prepare({"type": "npz", "path": "plain.npy"}, [1, 2, 2])


def test_idx_errors(prepare, tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder)

    def fails(match, **options):
        with pytest.raises(ConfigError, match=match):
            prepare({"type": "idx", "path": "mnist", **options}, [1, 6, 5])

    images = re.escape(str(folder / "train-images-idx3-ubyte"))
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    fails(rf"train\.data \(idx\): {images}: not an IDX file \(bad magic number 0x12345678\)")
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((12, 6, 5)), code=0x07)
    fails(rf"{images}: not an IDX file \(bad magic number 0x00000703\)")
    good = write_idx(folder / "train-images-idx3-ubyte", np.zeros((12, 6, 5)))
    good.write_bytes(good.read_bytes()[:-1])
    fails(rf"{images}: the header says shape \[12, 6, 5\] \(376 bytes\) but the file has 375 bytes")
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((11, 6, 5)))
    fails(rf"{images} has 11 images but train-labels-idx1-ubyte has 12 labels")
    (folder / "train-images-idx3-ubyte").unlink()
    fails(rf"file not found: {images} \(or train-images-idx3-ubyte\.gz\)")
    write_mnist(folder)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    fails(rf"file not found: {re.escape(str(folder / 't10k-labels-idx1-ubyte'))}", validation="test")
    fails(r"validation must be one of \"split\", \"test\"; got validation=\"train\"", validation="train")
    fails(r"limit must be >= 1; got limit=0", limit=0)
    fails(rf"path: folder not found: {re.escape(str(tmp_path / 'elsewhere'))}", path="elsewhere")


def test_checks_against_the_network(prepare, tmp_path):
    def fails(x, y, match, input_shape=(1, 2, 2), num_classes=10, **kwargs):
        save_npz(tmp_path / "d.npz", x, y)
        with pytest.raises(ConfigError, match=match):
            prepare({"type": "npz", "path": "d.npz"}, input_shape, num_classes=num_classes, **kwargs)

    y = np.array([0, 1, 2, 1])
    fails(np.zeros((4, 3, 2, 2)), y, r"train\.data \(npz\): the training inputs have shape \[3, 2, 2\] "
          r"per example but the network input shape is \[1, 2, 2\]$")
    fails(np.zeros((4, 2, 2)), np.array([0, 1, 3, 1]), r"training label 3 \(example 2\) is out of range for "
          r"a network with 3 classes; labels must be in \[0, 3\)", num_classes=3)
    fails(np.zeros((4, 2, 2)), np.array([0, -1, 2, 1]), r"training label -1 \(example 1\)")
    x = np.zeros((4, 2, 2))
    x[1, 0, 0], x[3, 1, 1], x[3, 0, 1] = np.nan, np.inf, -np.inf
    fails(x, y, r"the training inputs have 3 NaN/Inf values \(the first in example 1\)")
    fails(np.full((4, 2, 2), 1e300), y, r"the training inputs have 16 NaN/Inf values")  # float32 overflow
    fails(np.zeros((0, 2, 2)), np.zeros(0, dtype=int), r"the training set is empty")
    fails(np.zeros((4, 2, 2)), y, r"validation_split=0\.1 of 4 examples leaves no validation examples",
          validation_split=0.1)
    fails(np.zeros((4, 2, 2)), y, r"validation_split=0\.9 of 4 examples leaves no training examples",
          validation_split=0.9)
    fails(np.zeros((4, 2, 2)), y, r"^train: validation_split must be in \[0, 1\); got validation_split=1$",
          validation_split=1)
    with pytest.raises(ConfigError, match=r"the training inputs have shape \[1, 8, 8\] .* "
                                          r"\[1, 28, 28\] \(set \"resize\": \[28, 28\]\)"):
        prepare({"type": "digits"}, [1, 28, 28])


@pytest.mark.parametrize("config, match", [
    ({"type": "digit"}, r"^train\.data: unknown data source 'digit' \(did you mean 'digits'\?\)"),
    ({"resize": 8}, r"^train\.data: missing required key 'type'"),
    ([1, 2], r"^train\.data: must be an object"),
    ({"type": "npz", "pth": "a.npz"}, r"^train\.data \(npz\): unknown key 'pth' \(did you mean 'path'\?\)"),
    ({"type": "npz"}, r"^train\.data \(npz\): missing required key 'path'"),
    ({"type": "npz", "path": 3}, r"path must be a file path \(a non-empty string\); got path=3"),
    ({"type": "digits", "normalize": "yes"}, r"^train\.data \(digits\): normalize must be true or false"),
])
def test_config_errors(prepare, config, match):
    with pytest.raises(ConfigError, match=match):
        prepare(config, [1, 8, 8])


# -- splits, normalization, batches ----------------------------------------------------------------
def test_stratified_split():
    y = np.repeat([0, 1, 2, 3], [10, 20, 30, 5])
    examples = Examples(np.arange(len(y), dtype=np.float32)[:, None], y)
    train, validation = stratified_split(examples, 0.2, seed=7)
    np.testing.assert_array_equal(np.bincount(validation.y), [2, 4, 6, 1])  # round(n_c * 0.2)
    np.testing.assert_array_equal(np.bincount(train.y), [8, 16, 24, 4])
    index = np.concatenate([train.x[:, 0], validation.x[:, 0]]).astype(int)
    assert sorted(index) == list(range(len(y)))  # disjoint, nothing lost
    assert (np.diff(train.x[:, 0]) > 0).all() and (np.diff(validation.x[:, 0]) > 0).all()
    np.testing.assert_array_equal(examples.y[validation.x[:, 0].astype(int)], validation.y)
    again = stratified_split(examples, 0.2, seed=7)[1]
    other = stratified_split(examples, 0.2, seed=8)[1]
    np.testing.assert_array_equal(again.x, validation.x)
    assert not np.array_equal(other.x, validation.x)


def test_stratified_split_remainders():
    y = np.repeat(np.arange(10), 3)  # 0.2 of 30 is 6: six classes give 1 example, four give 0
    examples = Examples(np.arange(30, dtype=np.float32)[:, None], y)
    for seed in range(5):
        train, validation = stratified_split(examples, 0.2, seed)
        assert len(validation) == 6 and len(train) == 24
        assert sorted(np.bincount(validation.y, minlength=10)) == [0] * 4 + [1] * 6
    picked = {tuple(stratified_split(examples, 0.2, seed)[1].y) for seed in range(5)}
    assert len(picked) > 1  # ties between classes are broken by the seed, not by class order


def test_normalization(prepare, tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 3, 2, 2)) * [[[5.0]], [[0.1]], [[0.0]]] + [[[3.0]], [[-1.0]], [[7.0]]]
    y = np.arange(40) % 4
    save_npz(tmp_path / "d.npz", x, y)
    config = {"type": "npz", "path": "d.npz", "normalize": True}
    train, validation, normalization, _ = prepare(config, [3, 2, 2], num_classes=4, validation_split=0.25)
    raw_train, raw_validation, none, _ = prepare({"type": "npz", "path": "d.npz"}, [3, 2, 2], num_classes=4,
                                              validation_split=0.25)
    assert none is None and len(validation) == 10
    mean = raw_train.x.astype(np.float64).mean(axis=(0, 2, 3))
    std = raw_train.x.astype(np.float64).std(axis=(0, 2, 3))
    np.testing.assert_allclose(normalization["mean"], mean)
    np.testing.assert_allclose(normalization["std"], [std[0], std[1], 1.0])  # a constant channel keeps std 1
    assert all(isinstance(v, float) for v in normalization["mean"] + normalization["std"])
    np.testing.assert_allclose(train.x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(train.x.std(axis=(0, 2, 3)), [1, 1, 0], atol=1e-5)
    expected = (raw_validation.x - mean[:, None, None]) / np.array([std[0], std[1], 1.0])[:, None, None]
    np.testing.assert_allclose(validation.x, expected, rtol=1e-5, atol=1e-5)
    assert validation.x.dtype == np.float32
    np.testing.assert_allclose(apply_normalization(raw_validation.x, normalization), validation.x)
    assert channel_statistics(raw_train.x) == normalization
    unchanged = apply_normalization(raw_validation.x.astype(np.float64), None)
    assert unchanged.dtype == np.float32 and np.array_equal(unchanged, raw_validation.x)
    with pytest.raises(ShapeError, match=r"3 channel means .* shape \(2, 4\)"):
        apply_normalization(np.zeros((2, 4)), normalization)


def test_batches_in_order():
    examples = Examples(np.arange(10, dtype=np.float32)[:, None], np.arange(10))
    got = list(batches(examples, 4))
    assert [len(y) for _, y in got] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), np.arange(10))
    assert [len(x) for x, _ in batches(examples, 20)] == [10]


def test_batches_shuffled():
    examples = Examples(np.arange(10, dtype=np.float32)[:, None], np.arange(10))
    rng = np.random.default_rng(5)
    epochs = []
    for _ in range(2):
        got = list(batches(examples, 3, rng))
        assert [len(y) for _, y in got] == [3, 3, 3, 1]
        for x, y in got:
            np.testing.assert_array_equal(x[:, 0], y)  # inputs stay with their labels
        epochs.append(np.concatenate([y for _, y in got]))
        assert sorted(epochs[-1]) == list(range(10))  # every example once per epoch
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.arange(10))
    again = np.concatenate([y for _, y in batches(examples, 3, np.random.default_rng(5))])
    np.testing.assert_array_equal(again, epochs[0])


# -- resize for every array source, and the accepted keys --------------------------------------------
def test_npz_resize_matches_the_digits_resize(prepare, tmp_path):
    x = np.random.default_rng(1).random((3, 2, 5, 4)).astype(np.float32)
    save_npz(tmp_path / "train.npz", x, np.array([0, 1, 2]))
    train, *_ = prepare({"type": "npz", "path": "train.npz", "resize": [7, 6]}, [2, 7, 6])
    assert train.x.shape == (3, 2, 7, 6) and train.x.dtype == np.float32
    np.testing.assert_allclose(train.x[2, 1], naive_bilinear(x[2, 1].astype(np.float64), 7, 6), rtol=1e-6)
    one_channel, *_ = prepare({"type": "npz", "path": save_npz(tmp_path / "grey.npz", x[:, 0], [0, 1, 2]).name,
                                 "resize": 3}, [1, 3, 3])
    assert one_channel.x.shape == (3, 1, 3, 3)


def test_npz_resize_needs_images(prepare, tmp_path):
    save_npz(tmp_path / "features.npz", np.zeros((3, 5), np.float32), np.array([0, 1, 2]))
    with pytest.raises(ConfigError, match=r"train\.data \(npz\): .*features\.npz: resize \[4, 4\] needs "
                                          r"images \(N, C, H, W\) or \(N, H, W\); x has shape \(3, 5\)"):
        prepare({"type": "npz", "path": "features.npz", "resize": [4, 4]}, [5])


def test_idx_resize(prepare, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    images = np.random.default_rng(2).integers(0, 256, (4, 6, 6), dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte", images)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(4, dtype=np.uint8))
    train, *_ = prepare({"type": "idx", "path": "mnist", "resize": [3, 4]}, [1, 3, 4])
    assert train.x.shape == (4, 1, 3, 4) and train.x.dtype == np.float32
    np.testing.assert_allclose(train.x[3, 0], naive_bilinear(images[3] / 255.0, 3, 4), rtol=1e-6)


@pytest.mark.parametrize("source", ["digits", "npz", "idx", "image_folder", "cifar10", "cifar100"])
def test_unknown_key_lists_every_accepted_key(prepare, sources, source):
    accepted = [*sources.get(source).config_keys(), "normalize"]
    with pytest.raises(ConfigError) as info:
        prepare({"type": source, "path": "x", "bogus_key": 1}, [1, 8, 8])
    assert str(info.value).endswith(f"{source} accepts: {', '.join(accepted)}")
    assert ("resize" in accepted) == (source != "image_folder")  # image_folder: size (Pillow, as torchvision)
