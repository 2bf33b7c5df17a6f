"""Reading checkpoints: every malformed or hostile file is one CheckpointError line, checked before use."""

import json
import os
import re
import zipfile

import numpy as np
import pytest

from cnnrun.engine import Network, memory
from cnnrun.engine.checkpoint import (Checkpoint, CheckpointError, check_resumable, load_checkpoint,
                                      network_state, restore_network, save_checkpoint)

NET = {"name": "tiny", "input": {"shape": [4]},
       "layers": [{"name": "fc", "type": "linear", "out_features": 3}, {"name": "bn", "type": "batchnorm"}]}


def state(seed=1):
    return np.random.default_rng(seed).bit_generator.state


def training_meta(**changes):
    meta = {"format": "cnnrun-checkpoint-1", "network": "tiny", "epoch": 2, "best": 0.5,
            "optimizer": {"type": "sgd", "step": 10}, "rng": {"shuffle": state(), "layers": {"fc": state(2)}},
            "normalization": None, "metrics": None}
    meta.update(changes)
    return meta


def write(path, meta, **arrays):
    """An .npz as save_checkpoint lays it out, with any meta (a JSON value, or an array as is)."""
    meta = meta if isinstance(meta, np.ndarray) else np.array(json.dumps(meta))
    default = {"param/fc/weight": np.ones((3, 4), np.float32)}
    np.savez(path, meta=meta, **{k.replace("/", "__SLASH__"): v for k, v in (arrays or default).items()})
    # np.savez keyword names cannot hold "/": rename the members inside the zip
    with zipfile.ZipFile(path) as z:
        members = {i.filename.replace("__SLASH__", "/"): z.read(i) for i in z.infolist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def fails(path, message):
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "allow_pickle" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("key", ["garbage", "param/onlylayer", "zzz/conv1/weight", "param//w", "optim"])
def test_array_keys_must_follow_the_layout(tmp_path, key):
    path = write(tmp_path / "c.npz", training_meta(), **{key: np.zeros(3, np.float32)})
    message = fails(path, rf"c\.npz: unknown array '{re.escape(key)}'; a checkpoint holds 'meta', 'param/LAYER/NAME'")
    assert "buffer conv1.weight" not in message


@pytest.mark.parametrize("meta, message", [
    (3, r"meta must be a JSON object; got 3"),
    ([1, 2], r"meta must be a JSON object; got \[1, 2\]"),
    ({"format": None}, r"is not a cnnrun checkpoint \(format null\)"),
    (training_meta(best="0.5"), r'meta best must be a finite number or null; got best="0.5"'),
    (training_meta(epoch="2"), r'meta epoch must be an integer >= 0; got epoch="2"'),
    (training_meta(epoch=-5), r"meta epoch must be an integer >= 0; got epoch=-5"),
    (training_meta(epoch=True), r"meta epoch must be an integer >= 0; got epoch=true"),
    (training_meta(optimizer="sgd"), r'meta optimizer must be an object \{"type": NAME, "step": integer >= 0\}; '
                                     r'got optimizer="sgd"'),
    (training_meta(optimizer={"type": "sgd", "step": -1}), r"meta optimizer must be"),
    (training_meta(rng="seed"), r"meta rng must be an object"),
    (training_meta(rng={"shuffle": {"bit_generator": "MT19937", "state": {"key": [0] * 624, "pos": 624}},
                                "layers": {}}),
     r'meta rng\.shuffle is not a PCG64 random-generator state \(got "MT19937"\)'),
    (training_meta(rng={"shuffle": state(), "layers": {"fc": 7}}),
     r"meta rng\.layers\.fc is not a PCG64 random-generator state \(got 7\)"),
    (training_meta(normalization={"mean": [0.0], "std": [0.0]}), r"meta normalization std must be > 0"),
    (training_meta(normalization={"mean": [0.0, 1.0], "std": [1.0]}), r"meta normalization must be null or"),
])
def test_meta_is_checked(tmp_path, meta, message):
    fails(write(tmp_path / "c.npz", meta), message)


def test_meta_that_is_not_a_string(tmp_path):
    fails(write(tmp_path / "c.npz", np.zeros(3)), r"meta must be a JSON string; got an array of float64")
    fails(write(tmp_path / "c.npz", np.array("{not json")), r"meta is not valid JSON")
    fails(write(tmp_path / "c.npz", np.array("[" * 100_000)), r"meta is not valid JSON")


@pytest.mark.parametrize("array, message", [
    (np.array(["a", "b", "c"]), r"parameter 'fc/weight' must hold real numbers; got dtype <U1"),
    (np.ones(3, np.complex64), r"parameter 'fc/weight' must hold real numbers; got dtype complex64"),
    (np.array([1.0, np.nan, np.inf], np.float32), r"parameter 'fc/weight' has 2 NaN/Inf values of 3"),
])
def test_parameters_must_be_finite_real_numbers(tmp_path, array, message):
    fails(write(tmp_path / "c.npz", training_meta(), **{"param/fc/weight": array}), message)


def test_resume_needs_the_whole_training_position(registry):
    net = Network.from_config(NET, registry=registry)
    params, buffers = network_state(net)
    meta = training_meta()
    del meta["best"]
    with pytest.raises(CheckpointError, match=r"c\.npz cannot be resumed: its meta has no 'best'"):
        check_resumable(Checkpoint(params, buffers, {}, meta), net, "c.npz")
    meta = training_meta(rng={"shuffle": state(), "layers": {"conv9": state()}})
    with pytest.raises(CheckpointError, match=r"meta rng\.layers names 'conv9', which is no layer of the network"):
        check_resumable(Checkpoint(params, buffers, {}, meta), net, "c.npz")
    check_resumable(Checkpoint(params, buffers, {}, training_meta()), net, "c.npz")


def test_negative_running_var_is_refused(registry):
    net = Network.from_config(NET, registry=registry)
    params, buffers = network_state(net)
    buffers["bn"]["running_var"] = np.array([1.0, -0.5, 2.0], np.float32)
    with pytest.raises(CheckpointError, match=r"c\.npz: buffer bn\.running_var holds a negative variance "
                                              r"\(-0\.5 at index 1\)"):
        restore_network(net, Checkpoint(params, buffers), "c.npz")


@pytest.mark.parametrize("content", [os.urandom(400), open("/etc/passwd", "rb").read(), b'{"format": 1}'])
def test_files_that_are_not_npz(tmp_path, content):
    path = tmp_path / "c.npz"
    path.write_bytes(content)
    fails(path, r"c\.npz: not an \.npz file")


def test_special_files_are_refused_without_reading_them(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    assert "file not found" not in fails(fifo, r"fifo\.npz: is a named pipe \(FIFO\), not a regular file")
    fails("/dev/zero", r"/dev/zero: is a character device, not a regular file")
    fails(tmp_path, r"is a folder, not a regular file")


def test_damaged_members(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, Checkpoint({"fc": {"weight": np.arange(64, dtype=np.float32)}}, {}, {}, training_meta()))
    data = bytearray(path.read_bytes())
    start = data.index(b"param/fc/weight.npy") + len("param/fc/weight.npy") + 200  # inside the array data
    data[start] ^= 0xFF
    path.write_bytes(bytes(data))
    fails(path, r"c\.npz: is truncated or corrupted \(array 'param/fc/weight': BadZipFile: Bad CRC-32")


def test_header_claiming_a_huge_array(tmp_path):
    path = write(tmp_path / "c.npz", training_meta(), **{"param/fc/weight": np.zeros(4, np.float32)})
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members["param/fc/weight.npy"] = members["param/fc/weight.npy"].replace(b"(4,)", b"(1000000000000,)")
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    fails(path, r"array 'param/fc/weight' is truncated or corrupted: its header says shape \(1000000000000,\) "
                r"of float32 \(3\.6 TiB\) but it holds \d+ B")


def test_arrays_larger_than_the_available_memory(tmp_path, monkeypatch):
    path = write(tmp_path / "c.npz", training_meta(), **{"param/fc/weight": np.zeros((1000, 100), np.float32)})
    monkeypatch.setattr(memory, "available_memory", lambda: 100_000)
    with pytest.raises(memory.MemoryLimitError, match=r"c\.npz: reading the checkpoint \(meta, param/fc/weight\) "
                                                      r"needs 392\.7 KiB but only 97\.7 KiB of memory is available"):
        load_checkpoint(path)
    monkeypatch.setattr(memory, "available_memory", lambda: 10**9)
    assert load_checkpoint(path).params["fc"]["weight"].shape == (1000, 100)
