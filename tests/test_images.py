"""The image data sources (image_folder, cifar10, cifar100) on files written here in the real
formats, and the lazy inputs they return."""

import functools

import numpy as np
import pytest
from PIL import Image

from cnnrun.engine import CnnrunError, ConfigError
from cnnrun.engine.data import batches, channel_statistics
from cnnrun.engine import lazy_inputs
from cnnrun.engine.lazy_inputs import LazyInputs
from cnnrun.plugins.images import Cifar10, Cifar100, ImageFolder


@pytest.fixture
def prepare(prepare):
    """conftest's prepare, for this module's three classes."""
    return functools.partial(prepare, num_classes=3)


def random_pixels(rng, h, w, mode):
    shape = {"L": (h, w), "RGB": (h, w, 3), "RGBA": (h, w, 4)}[mode]
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def save_image(path, pixels, mode=None, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    image.save(path, **options)
    return path


def make_folder(root, rng, *, classes=("dog", "cat", "bird"), per_class=3, h=6, w=5):
    """PNG RGB images, ``per_class`` in each class folder; returns {file: pixels (H, W, 3)}."""
    written = {}
    for name in classes:
        for k in range(per_class):
            pixels = random_pixels(rng, h, w, "RGB")
            written[save_image(root / name / f"{k}.png", pixels)] = pixels
    return written


def chw(pixels):
    return (pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)).astype(np.float32) / np.float32(255)


# -- image_folder ----------------------------------------------------------------------------------
def test_image_folder_classes_sorted_labels_are_indices_and_pixels_scaled(tmp_path, rng):
    written = make_folder(tmp_path / "data", rng)
    splits = ImageFolder(path="data").load(tmp_path)
    assert splits.class_names == ["bird", "cat", "dog"]
    assert isinstance(splits.train.x, LazyInputs) and splits.train.x.shape == (9, 3, 6, 5)
    files = splits.train.x.store.files
    assert [f.parent.name for f in files] == ["bird"] * 3 + ["cat"] * 3 + ["dog"] * 3
    np.testing.assert_array_equal(splits.train.y, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    expected = np.stack([chw(written[f]) for f in files])
    np.testing.assert_array_equal(splits.train.x[:], expected)
    np.testing.assert_array_equal(splits.train.x[np.array([7, 2])], expected[[7, 2]])
    assert splits.validation is None


@pytest.mark.parametrize("suffix, mode, options", [
    (".png", "L", {}), (".png", "RGBA", {}), (".png", "P", {}), (".bmp", "RGB", {}),
    (".webp", "RGB", {"lossless": True}), (".webp", "RGBA", {"lossless": True}), (".JPG", "RGB", {"quality": 95}),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_formats_and_modes_decode_as_pillow_converts_them(tmp_path, rng, suffix, mode, options,
                                                                     channels):
    pixels = random_pixels(rng, 7, 4, "RGBA" if mode == "RGBA" else "RGB")
    file = save_image(tmp_path / "data" / "only" / f"a{suffix}", pixels,
                      mode if mode in ("L", "P") else None, **options)
    splits = ImageFolder(path="data", channels=channels).load(tmp_path)
    with Image.open(file) as image:
        assert image.mode == ("RGB" if suffix == ".JPG" else mode)
        expected = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    np.testing.assert_array_equal(splits.train.x[:], chw(expected)[None])


def test_image_folder_size_resizes_bilinearly_with_pillow(tmp_path, rng):
    make_folder(tmp_path / "data", rng, classes=("a",), per_class=1, h=9, w=13)
    save_image(tmp_path / "data" / "a" / "big.png", random_pixels(rng, 20, 11, "RGB"))
    splits = ImageFolder(path="data", size=[4, 6]).load(tmp_path)
    assert splits.train.x.shape == (2, 3, 4, 6)
    for k, file in enumerate(splits.train.x.store.files):
        with Image.open(file) as image:
            expected = np.asarray(image.convert("RGB").resize((6, 4), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(splits.train.x[k:k + 1], chw(expected)[None])


def test_image_folder_validation_path_labels_follow_the_training_classes(tmp_path, rng):
    make_folder(tmp_path / "train", rng)
    make_folder(tmp_path / "val", rng, classes=("dog",), per_class=2)
    splits = ImageFolder(path="train", validation_path="val").load(tmp_path)
    np.testing.assert_array_equal(splits.validation.y, [2, 2])
    make_folder(tmp_path / "small", rng, classes=("cat",), per_class=1, h=4, w=4)
    with pytest.raises(ConfigError, match=r"validation_path: the images of .*small are 4x4 but those of .*train "
                                          r"are 5x6; set \"size\""):
        ImageFolder(path="train", validation_path="small").load(tmp_path)
    assert ImageFolder(path="train", validation_path="small", size=3).load(tmp_path).validation.x.shape == (1, 3, 3, 3)
    make_folder(tmp_path / "val", rng, classes=("cow",), per_class=1)
    with pytest.raises(ConfigError, match=r"validation_path: .*cow is not a class of path"):
        ImageFolder(path="train", validation_path="val").load(tmp_path)


def test_image_folder_through_prepare_data_splits_normalizes_and_batches_lazily(prepare, tmp_path, rng,
                                                                               monkeypatch):
    monkeypatch.setattr(lazy_inputs, "STATISTICS_CHUNK", 4)  # statistics over several chunks
    make_folder(tmp_path / "data", rng, per_class=4)
    config = {"type": "image_folder", "path": "data", "normalize": True}
    train, validation, normalization, _ = prepare(config, (3, 6, 5), validation_split=0.25)
    assert isinstance(train.x, LazyInputs) and (len(train), len(validation)) == (9, 3)
    np.testing.assert_array_equal(np.bincount(validation.y), [1, 1, 1])
    dense_train, _, _, _ = prepare({"type": "image_folder", "path": "data"}, (3, 6, 5), validation_split=0.25)
    expected = channel_statistics(np.asarray(dense_train.x))
    np.testing.assert_allclose(normalization["mean"], expected["mean"], rtol=1e-12)
    np.testing.assert_allclose(normalization["std"], expected["std"], rtol=1e-9)
    mean = np.asarray(expected["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(expected["std"], dtype=np.float32).reshape(1, 3, 1, 1)
    order = np.random.default_rng(5)
    for (x, y), (x_dense, y_dense) in zip(batches(train, 4, order), batches(dense_train, 4, np.random.default_rng(5))):
        assert isinstance(x, np.ndarray) and x.dtype == np.float32
        np.testing.assert_allclose(x, (np.asarray(x_dense) - mean) / std, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(y, y_dense)


def test_image_folder_cache_limit_decodes_again_when_read(tmp_path, rng):
    make_folder(tmp_path / "data", rng, per_class=2, h=4, w=4)  # 48 bytes an image
    cached = ImageFolder(path="data").load(tmp_path).train.x
    uncached = ImageFolder(path="data", cache_mb=0).load(tmp_path).train.x
    assert len(cached.store.cache.images) == 6 and not uncached.store.cache.images
    np.testing.assert_array_equal(uncached[:], cached[:])
    cache = cached.store.cache
    cache.limit_bytes, cache.images, cache.used_bytes = 100, {}, 0
    for k in range(3):
        cache.keep(k, np.zeros(48, np.uint8))
    assert list(cache.images) == [0, 1] and cache.used_bytes == 96


def test_image_folder_bad_input_is_one_line_naming_the_file(tmp_path, rng):
    def error(**options):
        with pytest.raises(ConfigError) as info:
            ImageFolder(**{"path": "data", **options}).load(tmp_path)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert f"path: folder not found: {tmp_path / 'data'}" in error()
    (tmp_path / "data").mkdir()
    assert "has no class folders" in error()
    make_folder(tmp_path / "data", rng, classes=("a",), per_class=2)
    (tmp_path / "data" / "empty").mkdir()
    (tmp_path / "data" / "empty" / "notes.txt").write_text("no images here")
    assert f"the class folder {tmp_path / 'data' / 'empty'} has no images" in error()
    (tmp_path / "data" / "empty" / "notes.txt").unlink()
    save_image(tmp_path / "data" / "empty" / "wide.png", random_pixels(rng, 6, 9, "RGB"))
    message = error()
    assert f"{tmp_path / 'data' / 'empty' / 'wide.png'} is 9x6 but" in message and '"size"' in message
    bad = tmp_path / "data" / "empty" / "zz.png"
    bad.write_bytes(b"\x89PNG not really")
    message = error(size=6)
    assert f"cannot decode the image {bad}" in message and "skip_bad" in message
    with pytest.raises(ConfigError, match=r"channels must be 1 \(grey\) or 3 \(RGB\); got channels=2"):
        ImageFolder(path="data", channels=2)
    with pytest.raises(ConfigError, match="size must be"):
        ImageFolder(path="data", size=[0, 3])


def test_image_folder_skip_bad_leaves_out_and_counts_corrupt_images(tmp_path, rng):
    make_folder(tmp_path / "data", rng, classes=("a", "b"), per_class=2)
    (tmp_path / "data" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "data" / "b" / "broken.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"skipped 2 image\(s\) that cannot be decoded .*broken.jpg"):
        splits = ImageFolder(path="data", skip_bad=True).load(tmp_path)
    assert len(splits.train) == 4
    for file in (tmp_path / "data" / "b").glob("?.png"):
        file.write_bytes(b"bad")
    with pytest.raises(ConfigError, match=r"class folder .*b has no images it can decode"):
        ImageFolder(path="data", skip_bad=True).load(tmp_path)


def test_image_folder_image_broken_after_loading_is_one_line_naming_it(tmp_path, rng):
    make_folder(tmp_path / "data", rng, classes=("a",), per_class=2)
    x = ImageFolder(path="data", cache_mb=0).load(tmp_path).train.x
    x.store.files[1].write_bytes(b"truncated")
    with pytest.raises(CnnrunError, match=f"{x.store.files[1]}: cannot decode the image"):
        x[np.array([0, 1])]


def test_image_folder_shape_must_match_the_network(prepare, tmp_path, rng):
    make_folder(tmp_path / "data", rng)
    with pytest.raises(ConfigError, match=r"train.data \(image_folder\): the training inputs have shape "
                                          r"\[3, 6, 5\] per example but the network input shape is \[1, 6, 5\]"):
        prepare({"type": "image_folder", "path": "data"}, (1, 6, 5))


# -- CIFAR -----------------------------------------------------------------------------------------
def write_cifar(folder, names, rng, *, label_bytes=1, records=3, label_high=10):
    """CIFAR binary files: per record ``label_bytes`` label bytes, then 3072 pixel bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in names:
        labels = rng.integers(0, label_high, size=(records, label_bytes), dtype=np.uint8)
        pixels = rng.integers(0, 256, size=(records, 3072), dtype=np.uint8)
        np.concatenate([labels, pixels], axis=1).tofile(folder / name)
        written[name] = labels, pixels.reshape(records, 3, 32, 32)
    return written


CIFAR10_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def cifar10(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-bin"
    written = write_cifar(folder, CIFAR10_FILES, rng)
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    return folder, written


@pytest.mark.parametrize("validation", ["split", "test"])
def test_cifar10_reads_the_binary_records(tmp_path, cifar10, validation):
    folder, written = cifar10
    splits = Cifar10(path=folder.name, validation=validation).load(tmp_path)
    assert splits.class_names == CIFAR10_NAMES
    labels = np.concatenate([written[n][0][:, 0] for n in CIFAR10_FILES[:5]])
    pixels = np.concatenate([written[n][1] for n in CIFAR10_FILES[:5]])
    np.testing.assert_array_equal(splits.train.y, labels)
    np.testing.assert_array_equal(splits.train.x[:], pixels.astype(np.float32) / np.float32(255))
    if validation == "test":
        np.testing.assert_array_equal(splits.validation.y, written["test_batch.bin"][0][:, 0])
        np.testing.assert_array_equal(splits.validation.x[:] * 255, written["test_batch.bin"][1])
    else:
        assert splits.validation is None


def test_cifar10_through_prepare_data(prepare, cifar10):
    folder, _ = cifar10
    train, validation, _, _ = prepare({"type": "cifar10", "path": folder.name, "validation": "test"}, (3, 32, 32),
                                   num_classes=10)
    assert (len(train), len(validation)) == (15, 3) and train.x.shape == (15, 3, 32, 32)


def test_cifar10_resize_is_the_bilinear_resize_of_every_source(prepare, cifar10):
    from cnnrun.plugins.data.datasets import resize_bilinear

    folder, written = cifar10
    train, validation, *_ = prepare({"type": "cifar10", "path": folder.name, "validation": "test", "resize": [16, 20]},
                                   (3, 16, 20), num_classes=10)
    assert train.x.shape == (15, 3, 16, 20) and validation.x.shape == (3, 3, 16, 20)
    pixels = written["test_batch.bin"][1].astype(np.float32) / np.float32(255)
    np.testing.assert_allclose(validation.x[:], resize_bilinear(pixels, (16, 20)), rtol=1e-6)
    assert validation.x[:].dtype == np.float32


@pytest.mark.parametrize("label, column, names", [("fine", 1, "fine_label_names.txt"),
                                                  ("coarse", 0, "coarse_label_names.txt")])
def test_cifar100_fine_labels_by_default_or_coarse(tmp_path, rng, label, column, names):
    folder = tmp_path / "c100"
    written = write_cifar(folder, ["train.bin", "test.bin"], rng, label_bytes=2, label_high=20)
    (folder / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)))
    (folder / "coarse_label_names.txt").write_text("\n".join(f"coarse{i}" for i in range(20)))
    options = {} if label == "fine" else {"label": "coarse"}
    splits = Cifar100(path="c100", validation="test", **options).load(tmp_path)
    np.testing.assert_array_equal(splits.train.y, written["train.bin"][0][:, column])
    np.testing.assert_array_equal(splits.validation.y, written["test.bin"][0][:, column])
    np.testing.assert_array_equal(splits.train.x[:] * 255, written["train.bin"][1])
    assert splits.class_names == (folder / names).read_text().split("\n")


def test_cifar_bad_input_is_one_line_saying_what_to_do(tmp_path, rng, cifar10):
    def error(source):
        with pytest.raises(ConfigError) as info:
            source.load(tmp_path)
        assert "\n" not in str(info.value)
        return str(info.value)

    folder, _ = cifar10
    message = error(Cifar10(path="nowhere"))
    assert f"folder not found: {tmp_path / 'nowhere'}" in message
    assert "data_batch_1.bin … data_batch_5.bin, test_batch.bin, batches.meta.txt" in message
    assert "cifar-10-binary.tar.gz" in message and "https://www.cs.toronto.edu/~kriz/cifar.html" in message
    assert f"(did you mean {folder}?)" in error(Cifar10(path="."))
    (folder / "data_batch_3.bin").write_bytes(b"\0" * 3074)
    assert f"{folder / 'data_batch_3.bin'} has 3074 bytes, not a positive multiple of 3073" in error(
        Cifar10(path=folder.name))
    (folder / "data_batch_3.bin").unlink()
    assert f"file not found: {folder / 'data_batch_3.bin'}; put the CIFAR-10" in error(Cifar10(path=folder.name))
    pickled = tmp_path / "cifar-10-batches-py"
    pickled.mkdir()
    (pickled / "data_batch_1").write_bytes(b"\x80\x04pickle")
    message = error(Cifar10(path=pickled.name))
    assert "python (pickle) version of CIFAR-10" in message and "cifar-10-binary.tar.gz" in message
    (tmp_path / "c100").mkdir()
    (tmp_path / "c100" / "train").write_bytes(b"\x80\x04pickle")
    assert "cifar-100-binary.tar.gz" in error(Cifar100(path="c100"))
    with pytest.raises(ConfigError, match='label must be one of "fine", "coarse"; got label="super"'):
        Cifar100(path="c100", label="super")
