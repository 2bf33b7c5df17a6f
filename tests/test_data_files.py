"""Data files that are damaged, hostile or too large: one line each, and only what is used is read."""

import gzip
import os
import struct
import zipfile

import numpy as np
import pytest

from cnnrun.engine import CnnrunError, ConfigError, memory
from cnnrun.engine.data import Examples, apply_normalization, prepare_data
from cnnrun.engine.plugins import DataSourceRegistry


@pytest.fixture
def prepare(plugin_manager, tmp_path):
    sources = DataSourceRegistry.from_plugin_manager(plugin_manager)

    def run(config, input_shape=(1, 2, 2), num_classes=10):
        return prepare_data(config, input_shape=input_shape, num_classes=num_classes, validation_split=0.0,
                            seed=0, registry=sources, base_dir=tmp_path)
    return run


def fails(prepare, config, match, error=ConfigError, **kwargs):
    with pytest.raises(error, match=match) as info:
        prepare(config, **kwargs)
    text = str(info.value)
    assert "\n" not in text and "allow_pickle" not in text and "Traceback" not in text
    return text


def good_npz(path, n=4, compressed=True):
    save = np.savez_compressed if compressed else np.savez
    save(path, x=np.arange(n * 4, dtype=np.float32).reshape(n, 1, 2, 2), y=np.arange(n) % 3)
    return path


def damage(path, kind):
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        data = data[: len(data) * 2 // 3]
    elif kind == "crc":  # a stored (uncompressed) archive: flip a byte of x's data
        data[data.index(b"x.npy") + 200] ^= 0x01
    else:  # corrupted deflate stream
        start = data.index(b"x.npy") + len("x.npy")
        data[start:start + 40] = os.urandom(40)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind, message", [("truncated", r"is truncated or corrupted"),
                                           ("crc", r"is truncated or corrupted \(array 'x': BadZipFile: Bad CRC-32"),
                                           ("deflate", r"is truncated or corrupted \(array 'x': ")])
@pytest.mark.parametrize("key", ["path", "validation_path"])
def test_damaged_npz_is_one_line(prepare, tmp_path, kind, message, key):
    good_npz(tmp_path / "good.npz")
    damage(good_npz(tmp_path / "bad.npz", n=40, compressed=kind != "crc"), kind)
    config = {"type": "npz", "path": "good.npz", key: "bad.npz"}
    fails(prepare, config, rf"^train\.data \(npz\): .*bad\.npz: {message}")


@pytest.mark.parametrize("content", [os.urandom(300), open("/etc/passwd", "rb").read(), b'{"x": [1, 2]}'])
def test_files_that_are_not_npz(prepare, tmp_path, content):
    (tmp_path / "d.npz").write_bytes(content)
    fails(prepare, {"type": "npz", "path": "d.npz"}, r"d\.npz: not an \.npz file \(np\.savez writes one\)")


def test_special_files_are_not_reported_missing(prepare, tmp_path):
    os.mkfifo(tmp_path / "pipe.npz")
    text = fails(prepare, {"type": "npz", "path": "pipe.npz"}, r"pipe\.npz: is a named pipe \(FIFO\), not a regular file")
    assert "not found" not in text
    fails(prepare, {"type": "npz", "path": "/dev/zero"}, r"/dev/zero: is a character device, not a regular file")


def test_npz_header_claiming_huge_arrays(prepare, tmp_path):
    path = good_npz(tmp_path / "d.npz", compressed=False)
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members["x.npy"] = members["x.npy"].replace(b"(4, 1, 2, 2)", b"(10**12, 1,)".replace(b"10**12", b"1000000000000"))
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    fails(prepare, {"type": "npz", "path": "d.npz"}, r"array 'x' is truncated or corrupted: its header says shape "
                                                     r"\(1000000000000, 1\) of float32 \(3\.6 TiB\)")


def test_npz_that_expands_beyond_the_available_memory(prepare, tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "big.npz", x=np.zeros((2000, 1, 2, 2), np.float64), y=np.zeros(2000, np.int64))
    assert (tmp_path / "big.npz").stat().st_size < 2000  # 80 kB of zeros compress to almost nothing
    monkeypatch.setattr(memory, "available_memory", lambda: 50_000)
    fails(prepare, {"type": "npz", "path": "big.npz"},
          r"big\.npz: reading the data \(x, y\) needs 78\.1 KiB but only 48\.8 KiB of memory is available",
          error=memory.MemoryLimitError)


def write_idx(path, shape, payload: bytes, *, code=0x08, compress=False):
    header = bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)
    data = header + payload
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    return path


def test_idx_limit_reads_only_the_first_examples(prepare, tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    # the headers claim 16M images; the files hold 100 (gzip: the size is not known without reading all)
    images = np.random.default_rng(0).integers(0, 256, (100, 2, 2), dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte.gz", (16_000_000, 2, 2), images.tobytes(), compress=True)
    write_idx(folder / "train-labels-idx1-ubyte.gz", (16_000_000,), bytes(range(100)), compress=True)
    monkeypatch.setattr(memory, "available_memory", lambda: 10_000)
    train, _, _, _ = prepare({"type": "idx", "path": "mnist", "limit": 50}, num_classes=100)
    assert len(train) == 50
    np.testing.assert_allclose(train.x[:, 0], images[:50] / np.float32(255))
    fails(prepare, {"type": "idx", "path": "mnist"},
          r"train-images-idx3-ubyte\.gz: reading 16000000 of the 16000000 items of shape \[2, 2\] needs 61\.0 MiB "
          r"but only 9\.8 KiB of memory is available", error=memory.MemoryLimitError, num_classes=100)


def test_idx_with_255_dimensions(prepare, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", (1,) * 255, b"\0")
    fails(prepare, {"type": "idx", "path": "mnist"},
          r"train-images-idx3-ubyte: the IDX header says 255 dimensions; expected unsigned-byte images \(N, H, W\)")


def test_idx_path_that_is_a_file(prepare, tmp_path):
    (tmp_path / "mnist").write_bytes(b"")
    fails(prepare, {"type": "idx", "path": "mnist"}, r"path: is not a folder: .*mnist$")


def test_idx_special_file(prepare, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    os.mkfifo(folder / "train-images-idx3-ubyte")
    fails(prepare, {"type": "idx", "path": "mnist"}, r"train-images-idx3-ubyte: is a named pipe \(FIFO\)")


def test_digits_resize_beyond_the_available_memory(prepare, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 2**34)
    fails(prepare, {"type": "digits", "resize": [100000, 100000]},
          r"^train\.data \(digits\): resize \[100000, 100000\] of 1797 images needs 196\.1 TiB but only "
          r"16\.0 GiB of memory is available", error=memory.MemoryLimitError, input_shape=(1, 100000, 100000))


def test_complex_and_string_inputs_are_refused(plugin_manager, tmp_path):
    from cnnrun.engine.data import DataSource, Splits

    class Complex(DataSource):
        type_name = "complex_test"

        def load(self, base_dir):
            return Splits(Examples(np.ones((2, 1, 2, 2), np.complex64), np.zeros(2, np.int64)))

    sources = DataSourceRegistry()
    sources.register(Complex)
    with pytest.raises(ConfigError, match=r"the training inputs must be real numbers; got dtype complex64"):
        prepare_data({"type": "complex_test"}, input_shape=(1, 2, 2), num_classes=2, validation_split=0.0,
                     seed=0, registry=sources, base_dir=tmp_path)


def test_normalization_with_a_zero_std_is_refused():
    with pytest.raises(CnnrunError, match=r"normalization needs finite means and stds > 0"):
        apply_normalization(np.ones((2, 1, 2, 2)), {"mean": [0.0], "std": [0.0]})
