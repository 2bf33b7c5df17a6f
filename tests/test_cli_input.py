"""Bad input on the command line: predict's output path, hostile files, sizes that cannot fit, NaN.

Each case is one ``Error:`` line, exit status 1, no traceback, nothing overwritten.
"""

import errno
import json
import os
import re
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine import Network, files, memory
from cnnrun.engine.checkpoint import Checkpoint, network_state, save_checkpoint

DENSE = {"name": "dense", "input": {"shape": [1, 8, 8]},
         "layers": [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 10}, {"type": "softmax"}],
         "train": {"data": {"type": "digits"}, "optimizer": {"type": "sgd", "lr": 0.1}, "epochs": 1}}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, match):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output and "allow_pickle" not in result.output
    assert re.search(match, lines[0]), lines[0]
    return lines[0]


@pytest.fixture
def trained(tmp_path, registry):
    """``(network file, checkpoint, inputs .npz)``: the dense network's initial weights as a checkpoint."""
    net_file = tmp_path / "dense.json"
    net_file.write_text(json.dumps(DENSE))
    net = Network.from_config(DENSE, registry=registry)
    params, buffers = network_state(net)
    checkpoint = tmp_path / "c.npz"
    save_checkpoint(checkpoint, Checkpoint(params, buffers, {}, {"normalization": None}))
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.random.default_rng(0).random((5, 8, 8)).astype(np.float32))
    return net_file, checkpoint, inputs


def predict(trained, x_file, out):
    net_file, checkpoint, _ = trained
    return run("predict", net_file, x_file, "--checkpoint", checkpoint, "--out", out)


# -- predict's output ------------------------------------------------------------------------------
def test_predict_refuses_to_write_over_its_input(trained, tmp_path):
    inputs = trained[2]
    before = inputs.read_bytes()
    one_line_error(predict(trained, inputs, inputs), r"--out .*in\.npz is INPUT\.npz: writing there would destroy it")
    os.symlink(inputs, tmp_path / "alias.npz")
    one_line_error(predict(trained, inputs, tmp_path / "alias.npz"), r"is INPUT\.npz")
    one_line_error(predict(trained, inputs, trained[1]), r"is the checkpoint")
    assert inputs.read_bytes() == before


def test_predict_writes_and_reports_the_real_path(trained, tmp_path):
    result = predict(trained, trained[2], tmp_path / "preds")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (f"checkpoint {trained[1]}\n"
                                     f"wrote predictions for 5 examples to {tmp_path / 'preds'}")
    assert not (tmp_path / "preds.npz").exists()
    with np.load(tmp_path / "preds") as data:
        assert data["probabilities"].shape == (5, 10) and data["labels"].shape == (5,)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "preds").stat().st_mode & 0o777 == 0o666 & ~umask


def test_predict_into_a_missing_folder(trained, tmp_path):
    one_line_error(predict(trained, trained[2], tmp_path / "nowhere" / "p.npz"),
                   r"cannot write .*p\.npz: the folder .*nowhere does not exist")


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system")])
def test_predict_write_failures_are_one_line(trained, tmp_path, monkeypatch, code, reason):
    (tmp_path / "p.npz").write_bytes(b"previous predictions")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, "replace", fail)
    one_line_error(predict(trained, trained[2], tmp_path / "p.npz"), rf"cannot write .*p\.npz: {reason}")
    assert (tmp_path / "p.npz").read_bytes() == b"previous predictions"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "dense.json", "in.npz", "p.npz"]


# -- predict's input -------------------------------------------------------------------------------
@pytest.mark.parametrize("x, match", [
    (np.zeros((0, 1, 8, 8), np.float32), r"x holds no examples \(shape \(0, 1, 8, 8\)\)"),
    (np.array(["a", "b"]), r"x must hold real numbers; got dtype <U1"),
    (np.ones((2, 1, 8, 8), np.complex64), r"x must hold real numbers; got dtype complex64"),
    (np.zeros(64, np.float32), r"x has shape \(64,\); the network takes \(N, 1, 8, 8\)"),
    (np.float32(3), r"x has shape \(\); the network takes \(N, 1, 8, 8\)"),
    (np.where(np.arange(3 * 64).reshape(3, 1, 8, 8) == 70, np.nan, 0.0),
     r"x has NaN/Inf values .* in 1 examples, the first in example 1"),
])
def test_predict_refuses_bad_inputs(trained, tmp_path, x, match):
    np.savez(tmp_path / "x.npz", x=x)
    one_line_error(predict(trained, tmp_path / "x.npz", tmp_path / "p.npz"), match)
    assert not (tmp_path / "p.npz").exists()


def test_predict_input_that_is_not_npz(trained, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8)))
    one_line_error(predict(trained, tmp_path / "x.npy", tmp_path / "p.npz"), r"x\.npy: is a \.npy file \(one array\), not an \.npz file")
    (tmp_path / "x.npz").write_bytes(os.urandom(256))
    one_line_error(predict(trained, tmp_path / "x.npz", tmp_path / "p.npz"), r"x\.npz: not an \.npz file")


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_damaged_npz_inputs_are_one_line(trained, tmp_path, command):
    net_file, checkpoint, _ = trained
    np.savez_compressed(tmp_path / "d.npz", x=np.random.default_rng(0).random((40, 8, 8)), y=np.arange(40) % 10)
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(data[: len(data) // 2])
    args = (["predict", net_file, tmp_path / "d.npz", "--out", tmp_path / "p.npz"] if command == "predict"
            else ["eval", net_file, "--data", tmp_path / "d.npz"])
    one_line_error(run(*args, "--checkpoint", checkpoint), r"d\.npz: is truncated or corrupted")


def test_predict_output_that_is_not_finite(trained, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.full((2, 1, 8, 8), 3e38, np.float32))
    one_line_error(predict(trained, tmp_path / "x.npz", tmp_path / "p.npz"),
                   r"the network's output for example 0 is not finite")


# -- eval ------------------------------------------------------------------------------------------
def test_eval_refuses_an_all_nan_checkpoint(trained, tmp_path):
    net_file, checkpoint, _ = trained
    with np.load(checkpoint) as data:
        arrays = {k: data[k] for k in data.files}
    arrays = {k: (np.full_like(v, np.nan) if k.startswith("param/") else v) for k, v in arrays.items()}
    with open(checkpoint, "wb") as f:
        np.savez(f, **{k.replace("/", "|"): v for k, v in arrays.items()})
    with zipfile.ZipFile(checkpoint) as z:
        members = {i.filename.replace("|", "/"): z.read(i) for i in z.infolist()}
    with zipfile.ZipFile(checkpoint, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    one_line_error(run("eval", net_file, "--checkpoint", checkpoint),
                   r"c\.npz: parameter 'fc/(bias|weight)' has \d+ NaN/Inf values .*the checkpoint is unusable")


def test_eval_json_writes_null_for_a_non_finite_loss(trained, monkeypatch):
    import cnnrun.engine.inference as inference

    monkeypatch.setattr(inference, "network_scores", lambda net, loss, ex, bs: (float("nan"), np.zeros((len(ex), 10))))
    net_file, checkpoint, _ = trained
    result = run("eval", net_file, "--checkpoint", checkpoint, "--data", '{"type": "digits"}', "--format", "json")
    assert result.exit_code == 0, result.output
    assert "NaN" not in result.output and json.loads(result.output)["loss"] is None


def test_eval_data_that_is_a_fifo(trained, tmp_path):
    os.mkfifo(tmp_path / "pipe.npz")
    text = one_line_error(run("eval", trained[0], "--checkpoint", trained[1], "--data", tmp_path / "pipe.npz"),
                          r"pipe\.npz: is a named pipe \(FIFO\), not a regular file")
    assert "not found" not in text


def test_eval_data_json_nested_too_deeply(trained):
    result = run("eval", trained[0], "--checkpoint", trained[1], "--data", '{"a": ' + "[" * 100_000)
    assert result.exit_code == 2 and "nested too deeply" in result.output and "Traceback" not in result.output


def test_predict_input_that_is_a_fifo(trained, tmp_path):
    os.mkfifo(tmp_path / "pipe.npz")
    text = one_line_error(predict(trained, tmp_path / "pipe.npz", tmp_path / "p.npz"),
                          r"pipe\.npz: is a named pipe \(FIFO\), not a regular file")
    assert "not found" not in text


def test_checkpoint_that_is_a_device(trained):
    text = one_line_error(run("eval", trained[0], "--checkpoint", "/dev/zero"),
                          r"/dev/zero: is a character device, not a regular file")
    assert "not found" not in text


def test_resume_from_a_checkpoint_without_best(trained, tmp_path, registry):
    net_file, checkpoint, _ = trained
    params, buffers = network_state(Network.from_config(DENSE, registry=registry))
    meta = {"epoch": 1, "optimizer": {"type": "sgd", "step": 3},
            "rng": {"shuffle": np.random.default_rng(0).bit_generator.state, "layers": {}}, "normalization": None}
    save_checkpoint(checkpoint, Checkpoint(params, buffers, {}, meta))
    one_line_error(run("train", net_file, "--resume", checkpoint, "--out", tmp_path / "run"),
                   r"c\.npz cannot be resumed: its meta has no 'best'")


# -- network files and sizes -----------------------------------------------------------------------
def test_network_file_that_is_not_utf8_or_too_deep(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"name": "caf\xe9",\n "layers": []}')
    one_line_error(run("describe", bad), r"bad\.json: not UTF-8 text: invalid byte 0xe9 at line 1 \(byte 13\)")
    bad.write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(run("describe", bad), r"bad\.json: invalid JSON: arrays or objects nested too deeply")
    one_line_error(run("describe", "/dev/zero"), r"/dev/zero: is a character device, not a regular file")


def test_null_type_reads_null(tmp_path):
    net = tmp_path / "n.json"
    net.write_text(json.dumps({"input": {"shape": [4]}, "layers": [{"type": None}]}))
    line = one_line_error(run("describe", net), r"unknown layer type null")
    assert "None" not in line


GIB = 2**30


@pytest.fixture
def eight_gib(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * GIB)


def write_net(tmp_path, layers, shape=(1, 8, 8), **train):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"name": "big", "input": {"shape": list(shape)}, "layers": layers,
                                "train": {"data": {"type": "digits"}, **train}}))
    return path


def test_describe_with_parameters_that_cannot_fit(tmp_path, eight_gib):
    conv = write_net(tmp_path, [{"name": "conv1", "type": "conv2d", "out_channels": 10**12, "kernel_size": 3}])
    one_line_error(run("describe", conv), r"network 'big': its parameters, gradients and buffers \(the largest: "
                                          r"layer 'conv1' weight of shape \(1000000000000, 1, 3, 3\)\) needs 72\.8 TiB "
                                          r"but only 8\.0 GiB of memory is available")
    dense = write_net(tmp_path, [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 10**10}])
    one_line_error(run("describe", dense), r"layer 'fc' weight of shape \(10000000000, 64\)\) needs 4\.7 TiB")
    dense = write_net(tmp_path, [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 1e10}])
    one_line_error(run("describe", dense), r"out_features must be an integer; got out_features=10000000000\.0")


def test_train_with_activations_that_cannot_fit(tmp_path, eight_gib):
    net = write_net(tmp_path, [{"name": "wide", "type": "conv2d", "out_channels": 2_000_000, "kernel_size": 1},
                               {"type": "global_avgpool"}, {"type": "flatten"},
                               {"name": "fc", "type": "linear", "out_features": 10}],
                    batch_size=32)
    one_line_error(run("train", net, "--out", tmp_path / "run"),
                   r"train: a batch of 32 through network 'big' \(the largest activation: layer 'wide', shape "
                   r"\(2000000, 8, 8\) per example\) needs 31\.5 GiB but only 8\.0 GiB")
    assert not (tmp_path / "run").exists()


def test_train_with_a_resize_that_cannot_fit(tmp_path, eight_gib):
    net = write_net(tmp_path, [{"type": "global_avgpool"}, {"type": "flatten"},
                               {"name": "fc", "type": "linear", "out_features": 10}])
    config = json.loads(net.read_text())
    config["train"]["data"]["resize"] = [100000, 100000]
    config["train"]["batch_size"] = 1
    net.write_text(json.dumps(config))
    one_line_error(run("train", net, "--out", tmp_path / "run"),
                   r"train\.data \(digits\): resize \[100000, 100000\] of 1797 images needs 196\.1 TiB")


def test_profile_with_an_input_that_cannot_fit(tmp_path, eight_gib):
    net = write_net(tmp_path, [{"type": "relu"}], shape=(3, 100000, 100000))
    one_line_error(run("profile", net), r"profile: a batch of 64 through network 'big' \(the largest activation: the input, shape "
                                        r"\(3, 100000, 100000\) per example\) needs 27\.9 TiB but only "
                                        r"8\.0 GiB of memory is available")


def test_batch_check_counts_gradients_only_in_training(registry, monkeypatch):
    net = Network.from_config(DENSE, registry=registry)  # 64 + 64 + 10 + 10 values per example
    monkeypatch.setattr(memory, "available_memory", lambda: 4 * 148 * 10)
    memory.check_batch_fits(net, 10, "eval", training=False)
    with pytest.raises(memory.MemoryLimitError, match=r"^train: a batch of 10 through network 'dense' \(the largest "
                                                      r"activation: the input, shape \(1, 8, 8\) per example\) needs "
                                                      r"11\.6 KiB but only 5\.8 KiB of memory is available$"):
        memory.check_batch_fits(net, 10, "train")
