"""What a training run does once, not per epoch or twice: read the network file, initialize the
parameters, build the schedule, serialize a checkpoint; and moves that are no-ops."""

import json

import numpy as np
import pytest

import cnnrun.engine.train as train_module
from cnnrun.engine import Network
from cnnrun.engine.checkpoint import load_checkpoint
from cnnrun.engine.progress import Reporter
from cnnrun.engine.schedules import Schedule
from cnnrun.engine.train import train

SMALL = {
    "name": "small",
    "input": {"shape": [1, 8, 8]},
    "layers": [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 10}],
    "train": {"optimizer": {"type": "sgd", "lr": 0.05}, "schedule": {"type": "step", "step_size": 1},
              "epochs": 1, "batch_size": 256, "seed": 7},
}


def counting(monkeypatch, owner, name):
    """Replace ``owner.name`` by a wrapper that records each call's arguments in the returned list."""
    calls, original = [], getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_the_network_file_is_parsed_once(tmp_path, registries, monkeypatch):
    path = tmp_path / "small.json"
    text = json.dumps(SMALL)
    path.write_text(text)
    loads = counting(monkeypatch, json, "loads")
    train(path, out=tmp_path / "run", registries=registries)
    assert sum(1 for args in loads if args[:1] == (text,)) == 1


def test_parameters_are_initialized_once_from_the_run_seed(tmp_path, registries, monkeypatch):
    linear = registries.layers.get("linear")
    initialized = counting(monkeypatch, linear, "initialize")
    captured = {}
    monkeypatch.setattr(train_module.Trainer, "fit", lambda trainer: captured.update(trainer.net.params["fc"]))
    train(json.loads(json.dumps(SMALL)), out=tmp_path / "run", registries=registries)
    assert len(initialized) == 1
    seeded = Network.from_config(SMALL, registry=registries.layers, seed=7).params["fc"]
    unseeded = Network.from_config(SMALL, registry=registries.layers).params["fc"]
    np.testing.assert_array_equal(captured["weight"], seeded["weight"])
    assert not np.array_equal(seeded["weight"], unseeded["weight"])


def test_moving_to_the_device_it_is_on_keeps_every_array(registries):
    net = Network.from_config({**SMALL, "layers": SMALL["layers"] + [{"type": "batchnorm"}]},
                              registry=registries.layers)
    arrays = [a for tree in (net.params, net.grads, net.buffers) for named in tree.values() for a in named.values()]
    backend = net.backend
    assert net.to("cpu") is net and net.to(backend) is net and net.backend is backend
    assert all(a is b for a, b in zip(arrays, [a for tree in (net.params, net.grads, net.buffers)
                                               for named in tree.values() for a in named.values()]))


@pytest.mark.parametrize("epochs", [1, 3])
def test_the_schedule_is_built_once_per_run(tmp_path, registries, monkeypatch, epochs):
    built = counting(monkeypatch, Schedule, "__init__")
    result = train(json.loads(json.dumps(SMALL)), overrides={"epochs": epochs}, out=tmp_path / "run",
                   registries=registries)
    assert [m["lr"] for m in result.metrics] == pytest.approx([0.05 * 0.1 ** e for e in range(epochs)])
    assert len(built) == 2  # checking the train section, then the run's own (with the optimizer's lr)


def test_a_new_best_is_serialized_once_and_copied_to_latest(tmp_path, registries, monkeypatch):
    written = []
    save, copy = train_module.save_checkpoint, train_module.copy_file

    def counted_save(path, checkpoint):
        written.append(("serialize", path.name))
        save(path, checkpoint)

    def counted_copy(source, path):
        written.append(("copy", source.name, path.name))
        copy(source, path)

    monkeypatch.setattr(train_module, "save_checkpoint", counted_save)
    monkeypatch.setattr(train_module, "copy_file", counted_copy)
    result = train(json.loads(json.dumps(SMALL)), out=tmp_path / "run", registries=registries)
    # the starting state, then epoch 1 (always the best so far): best.npz first, then latest.npz
    assert written == [("serialize", "latest.npz"), ("serialize", "best.npz"), ("copy", "best.npz", "latest.npz")]
    best, latest = result.run_dir / "best.npz", result.run_dir / "latest.npz"
    assert not latest.is_symlink() and not best.samefile(latest)
    assert best.read_bytes() == latest.read_bytes()
    assert load_checkpoint(latest).meta["epoch"] == 1
    assert [p.name for p in result.run_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_the_records_of_fit_are_the_result(tmp_path, registries, monkeypatch):
    """The run's metrics come from the epochs themselves, not from reading metrics.jsonl back."""
    seen = []

    class Recorder(Reporter):
        def epoch_end(self, metrics):
            seen.append(metrics)

    def no_reading(path):
        raise AssertionError(f"{path} read back")

    monkeypatch.setattr(train_module, "read_metrics", no_reading)
    result = train(json.loads(json.dumps(SMALL)), overrides={"epochs": 2}, out=tmp_path / "run",
                   registries=registries, reporter=Recorder())
    assert len(result.metrics) == 2
    for kept, shown in zip(result.metrics, seen):  # the reporter gets the record plus the data wait
        assert {**kept, "data_wait_seconds": shown["data_wait_seconds"]} == shown
