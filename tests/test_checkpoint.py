"""Checkpoints: round trip, atomic writes, clear errors for damaged files, no pickle."""

import json
import zipfile

import numpy as np
import pytest

from cnnrun.engine import Network
from cnnrun.engine.checkpoint import (Checkpoint, CheckpointError, load_checkpoint, network_state,
                                      restore_network, save_checkpoint)
from cnnrun.engine.files import WriteError

NET = {"name": "tiny", "input": {"shape": [4]},
       "layers": [{"name": "fc", "type": "linear", "out_features": 3}, {"name": "bn", "type": "batchnorm"}]}


def sample(seed=0) -> Checkpoint:
    rng = np.random.default_rng(seed)
    return Checkpoint({"fc": {"weight": rng.standard_normal((3, 4)).astype(np.float32)}},
                      {"bn": {"running_mean": rng.standard_normal(3).astype(np.float32)}},
                      {"fc/weight/momentum": rng.standard_normal((3, 4)).astype(np.float32)},
                      {"epoch": 3, "rng": {"shuffle": np.random.default_rng(1).bit_generator.state, "layers": {}}})


def test_round_trip(tmp_path):
    path = tmp_path / "c.npz"
    saved = sample()
    save_checkpoint(path, saved)
    loaded = load_checkpoint(path)
    np.testing.assert_array_equal(loaded.params["fc"]["weight"], saved.params["fc"]["weight"])
    np.testing.assert_array_equal(loaded.buffers["bn"]["running_mean"], saved.buffers["bn"]["running_mean"])
    np.testing.assert_array_equal(loaded.optimizer["fc/weight/momentum"], saved.optimizer["fc/weight/momentum"])
    assert loaded.meta["epoch"] == 3 and loaded.meta["rng"] == saved.meta["rng"]
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left


def test_no_pickled_objects_inside(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, sample())
    with np.load(path, allow_pickle=False) as data:  # would raise on an object array
        assert all(data[k].dtype != object for k in data.files)
        assert json.loads(str(data["meta"]))["format"] == "cnnrun-checkpoint-1"


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.npz"
    save_checkpoint(path, sample(0))
    before = path.read_bytes()

    def crash(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(WriteError, match=r"^cannot write .*latest\.npz: disk full$"):
        save_checkpoint(path, sample(1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.npz"]


@pytest.mark.parametrize("damage, message", [("truncate", "is truncated or corrupted"),
                                             ("garbage", r"not an \.npz file"),
                                             ("empty", r"is empty \(0 bytes\), not an \.npz file")])
def test_damaged_checkpoint_is_a_clear_error(tmp_path, damage, message):
    path = tmp_path / "c.npz"
    save_checkpoint(path, sample())
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=rf"^checkpoint .*c\.npz: {message}"):
        load_checkpoint(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint .*absent\.npz: file not found"):
        load_checkpoint(tmp_path / "absent.npz")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, meta=np.array(json.dumps({"format": "other"})))
    with pytest.raises(CheckpointError, match="is not a cnnrun checkpoint"):
        load_checkpoint(foreign)
    with zipfile.ZipFile(tmp_path / "nometa.npz", "w") as z:
        z.writestr("x.npy", b"")
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "nometa.npz")


def test_restore_checks_names_and_shapes(registry):
    net = Network.from_config(NET, registry=registry)
    params, buffers = network_state(net)
    other = Network.from_config(NET, registry=registry)
    other.initialize(seed=5)
    restore_network(other, Checkpoint(params, buffers))
    np.testing.assert_array_equal(other.params["fc"]["weight"], net.params["fc"]["weight"])
    wrong = {"fc": {"weight": np.zeros((3, 5), np.float32), "bias": params["fc"]["bias"]}, "bn": params["bn"]}
    with pytest.raises(CheckpointError, match=r"parameter fc.weight has shape \(3, 5\) in the checkpoint, \(3, 4\) in the network"):
        restore_network(net, Checkpoint(wrong, buffers))
    with pytest.raises(CheckpointError, match=r"it has no parameter bn.bias"):
        restore_network(net, Checkpoint({"fc": params["fc"], "bn": {"weight": params["bn"]["weight"]}}, buffers))
    with pytest.raises(CheckpointError, match=r"its parameter extra.w is not in the network"):
        restore_network(net, Checkpoint({**params, "extra": {"w": np.zeros(1)}}, buffers))
