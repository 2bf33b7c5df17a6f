"""Data-parallel training over MPI (engine/distributed.py): 2 ranks under ``mpiexec -n 2`` (the
MPICH that the dev extra installs) against one process with the same global batch."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnnrun.engine.checkpoint import load_checkpoint
from cnnrun.engine.distributed import ONE_PROCESS, bucket_gradients, under_mpi_launcher
from cnnrun.engine.network import Network
from cnnrun.engine.train import train

HERE = Path(__file__).parent
TIMEOUT = 120  # seconds for one mpiexec run: a hang fails the test

LENET = {  # LeNet-5's shape on the 8x8 digits
    "name": "lenet_digits8",
    "input": {"shape": [1, 8, 8]},
    "layers": [
        {"name": "conv1", "type": "conv2d", "out_channels": 6, "kernel_size": 3, "padding": 1},
        {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2},
        {"name": "conv2", "type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"name": "fc1", "type": "linear", "out_features": 32}, {"type": "relu"},
        {"name": "fc2", "type": "linear", "out_features": 10},
    ],
    "train": {"data": {"type": "digits", "normalize": True}, "validation_split": 0.2,
              "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
              "epochs": 3, "batch_size": 64, "seed": 0},  # 1437 training examples: a last batch of 29
}
# lr 0.1, not 0.05: at 0.05 the third epoch is where the loss leaves its plateau, and there a 3e-7
# relative change of the learning rate (or a different rounding of the summed gradients) moves the
# epoch's loss by 4e-3; at 0.1 such perturbations move it by at most 1.2e-6 (measured, +-1e-6).
SYNC_BN = {
    "name": "sync_bn",
    "input": {"shape": [1, 8, 8]},
    "layers": [
        {"name": "conv", "type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1, "bias": False},
        {"name": "bn", "type": "batchnorm", "sync": True},
        {"type": "relu"}, {"type": "global_avgpool"}, {"type": "flatten"},
        {"name": "fc", "type": "linear", "out_features": 10},
    ],
    "train": {"data": {"type": "digits", "normalize": True}, "validation_split": 0.2,
              "optimizer": {"type": "adam", "lr": 0.01}, "epochs": 2, "batch_size": 50, "seed": 3},
}


def mpiexec() -> str:
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    assert found, "no mpiexec beside sys.executable or on PATH: pip install 'cnnrun[mpi]'"
    return found


def run_ranks(args: list[str], cwd: Path, ranks: int = 2) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CNNRUN_MPI"}
    env["NUMBA_NUM_THREADS"] = "1"  # 2 ranks on a 2-core machine
    return subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def worker(net: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    """tests/mpi_train.py on 2 ranks (it checks the weights of both ranks after every step)."""
    return run_ranks([str(HERE / "mpi_train.py"), str(net), str(out), *options], cwd=out.parent)


def write_net(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config))
    return path


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(run: Path, reference: Path) -> float:
    """Per-epoch losses and accuracies within 1e-4 relative, parameters to float32 rounding
    accumulated over the run; returns the largest parameter difference."""
    got, expected = metrics(run), metrics(reference)
    assert [m["epoch"] for m in got] == [m["epoch"] for m in expected]
    for a, b in zip(got, expected):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (key, a["epoch"])
    mine, theirs = load_checkpoint(run / "latest.npz"), load_checkpoint(reference / "latest.npz")
    assert mine.meta["optimizer"] == theirs.meta["optimizer"] and mine.meta["rng"] == theirs.meta["rng"]
    worst = 0.0
    for layer, named in theirs.params.items():
        for name, array in named.items():
            np.testing.assert_allclose(mine.params[layer][name], array, rtol=1e-5, atol=2e-6)
            worst = max(worst, float(np.abs(mine.params[layer][name] - array).max()))
    return worst


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nets")
    return {"lenet": write_net(folder / "lenet.json", LENET), "sync_bn": write_net(folder / "sync_bn.json", SYNC_BN)}


@pytest.fixture(scope="module")
def one_process(nets, tmp_path_factory):
    """LeNet trained 3 epochs in this process: the reference."""
    out = tmp_path_factory.mktemp("one") / "run"
    train(nets["lenet"], out=out)
    return out


def test_two_ranks_equal_one_process(nets, one_process, tmp_path):
    done = run_ranks(["-m", "cnnrun.cli", "train", str(nets["lenet"]), "--out", str(tmp_path / "two"), "-q"],
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line[:9] for line in done.stdout.splitlines() if line.startswith("epoch")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]  # rank 0 alone reports
    assert "training on 2 ranks over MPI on 1 host(s)" in done.stdout and "1 Numba thread(s) each" in done.stdout
    assert_same_run(tmp_path / "two", one_process)


def test_resume_two_ranks_in_one_process_and_one_in_two(nets, one_process, tmp_path):
    two = tmp_path / "two"
    done = worker(nets["lenet"], two, "--epochs", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads((two / "checks.json").read_text()) == {"steps": 23}  # identical weights after each step
    train(nets["lenet"], resume=two)  # 2 ranks -> 1 process
    assert_same_run(two, one_process)

    one = tmp_path / "one"
    train(nets["lenet"], out=one, overrides={"epochs": 1})
    done = worker(nets["lenet"], one, "--resume", str(one))  # 1 process -> 2 ranks
    assert done.returncode == 0, done.stderr
    assert json.loads((one / "checks.json").read_text()) == {"steps": 46}
    assert_same_run(one, one_process)


def test_sync_batchnorm_equals_one_process(nets, tmp_path):
    train(nets["sync_bn"], out=tmp_path / "one")
    done = worker(nets["sync_bn"], tmp_path / "two")
    assert done.returncode == 0, done.stderr
    assert_same_run(tmp_path / "two", tmp_path / "one")
    one, two = load_checkpoint(tmp_path / "one" / "latest.npz"), load_checkpoint(tmp_path / "two" / "latest.npz")
    np.testing.assert_allclose(two.buffers["bn"]["running_var"], one.buffers["bn"]["running_var"], rtol=1e-4)


@pytest.mark.parametrize("kind", ["kill", "raise"])
def test_a_failing_rank_ends_the_job_with_the_last_checkpoint(nets, tmp_path, kind):
    out = tmp_path / "run"
    started = time.monotonic()
    done = worker(nets["lenet"], out, "--fail", f"{kind}:1:2:5")  # rank 1, epoch 2, after batch 5
    assert done.returncode != 0
    assert time.monotonic() - started < 60
    if kind == "raise":
        lines = [line for line in done.stderr.splitlines() if line.startswith("cnnrun: rank")]
        assert lines == [lines[0]] and "rank 1 of 2" in lines[0] and "RuntimeError: planned failure" in lines[0]
    checkpoint = load_checkpoint(out / "latest.npz")
    assert checkpoint.meta["epoch"] == 1
    assert [m["epoch"] for m in metrics(out)] == [1]


def test_gradients_live_in_flat_buckets_last_layer_first():
    net = Network.from_config(LENET)
    before = {(layer, name): array.copy() for layer, named in net.grads.items() for name, array in named.items()}
    buckets = bucket_gradients(net, 2000)  # bytes: several buckets
    assert len(buckets) > 1 and sum(b.size for b in buckets) == sum(a.size for a in before.values())
    assert np.shares_memory(buckets[0], net.grads["fc2"]["weight"])
    assert net.contexts["fc2"].grads["weight"] is net.grads["fc2"]["weight"]  # the layer writes into the bucket
    net.grads["conv1"]["weight"][...] = 7
    assert any((b == 7).sum() == before[("conv1", "weight")].size for b in buckets)


def test_launcher_detection_and_one_process_no_ops(one_process):
    from cnnrun.engine.distributed import world

    assert world() is ONE_PROCESS and "mpi4py" not in sys.modules  # one_process trained without MPI
    assert not under_mpi_launcher({})
    assert under_mpi_launcher({"PMI_SIZE": "2"}) and under_mpi_launcher({"OMPI_COMM_WORLD_SIZE": "4"})
    assert under_mpi_launcher({"SLURM_STEP_NUM_TASKS": "8"}) and not under_mpi_launcher({"PMI_SIZE": "1"})
    assert not under_mpi_launcher({"PMI_SIZE": "2", "CNNRUN_MPI": "0"}) and under_mpi_launcher({"CNNRUN_MPI": "1"})
    index = np.arange(5)
    assert ONE_PROCESS.shard(index) is index and ONE_PROCESS.epoch_totals(None, 1.0, 2.0) == (1.0, 2.0)


def test_ranks_share_the_cores_of_their_host_unless_told():
    import numba

    from cnnrun.engine.distributed import set_threads

    before = numba.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
        assert set_threads(cores, environ={}) == 1 == numba.get_num_threads()
        assert set_threads(cores, environ={"NUMBA_NUM_THREADS": "1"}) == 1  # told: left as it is
        numba.set_num_threads(before)
        assert set_threads(1, environ={}) == min(cores, numba.config.NUMBA_NUM_THREADS)
    finally:
        numba.set_num_threads(before)


def test_ranks_above_0_draw_dropout_and_augmentation_streams_of_their_own():
    from types import SimpleNamespace

    from cnnrun.engine.distributed import MpiComm

    net = Network.from_config(LENET)
    first = {name: ctx.rng for name, ctx in net.contexts.items()}

    def streams(rank, epoch):
        comm = MpiComm.__new__(MpiComm)  # its seed_streams needs no MPI
        comm.rank, comm.is_root = rank, rank == 0
        trainer = SimpleNamespace(net=net, config={"seed": 0}, augment_rng=None)
        comm.seed_streams(trainer, epoch)
        return [trainer.augment_rng.random() if trainer.augment_rng else None] + \
               [ctx.rng.random() for ctx in net.contexts.values()]

    assert streams(0, 1)[0] is None and all(net.contexts[n].rng is r for n, r in first.items())  # rank 0: as one process
    one = streams(1, 1)
    assert len(set(one)) == len(one)  # a stream per layer and one for augmentation
    assert streams(1, 1) == one and streams(1, 2) != one and streams(2, 1) != one


def test_every_batch_needs_an_example_per_rank():
    from types import SimpleNamespace

    from cnnrun.engine.distributed import MpiComm
    from cnnrun.engine.errors import ConfigError

    comm = MpiComm.__new__(MpiComm)  # its checks need no MPI
    comm.size = 2
    net = Network.from_config(LENET)
    trainer = SimpleNamespace(net=net, config={"batch_size": 64, "drop_last": False}, train_data=range(129))
    with pytest.raises(ConfigError, match=r"2 ranks need at least 2 examples in every batch.*the last batch "
                                          r"\(129 training examples\) holds 1 \(batch_size 64\)"):
        comm.attach(trainer)
    trainer.config = {"batch_size": 1, "drop_last": True}
    with pytest.raises(ConfigError, match="every batch holds 1"):
        comm.attach(trainer)
    mlp = {"input": {"shape": [4]}, "layers": [{"type": "linear", "out_features": 3, "name": "fc"},
                                               {"type": "batchnorm", "name": "bn"}]}
    trainer = SimpleNamespace(net=Network.from_config(mlp), config={"batch_size": 64, "drop_last": False},
                              train_data=range(67))  # a last batch of 3: parts of 2 and 1
    with pytest.raises(ConfigError, match=r"layer 'bn' \(batchnorm\) needs more than one value per channel.*"
                                          r"with 2 ranks, a batch of 3 gives a rank 1 example"):
        comm.attach(trainer)


def test_a_failing_rank_says_what_failed_in_one_line_and_exits_with_its_status():
    import signal

    from cnnrun.engine.distributed import describe, exit_status
    from cnnrun.engine.errors import CnnrunError
    from cnnrun.engine.stopping import TrainingInterrupted

    try:
        raise ValueError("bad value\nsecond line")
    except ValueError as exc:
        assert describe(exc).startswith("ValueError: bad value (at ") and "test_distributed.py:" in describe(exc)
        assert exit_status(exc) == 1
    assert describe(CnnrunError("net.json: no layers")) == "net.json: no layers"
    stop = TrainingInterrupted("Interrupted.", run_dir=Path("r"), saved_epoch=1, epochs=3, signum=signal.SIGTERM)
    assert exit_status(stop) == 143 and exit_status(KeyboardInterrupt()) == 130 and exit_status(SystemExit(3)) == 3


def test_an_mpiexec_of_another_mpi_is_one_clear_error(tmp_path):
    env = {**os.environ, "OMPI_COMM_WORLD_SIZE": "3"}  # what Open MPI's mpirun sets; mpi4py runs MPICH
    code = "from cnnrun.engine.distributed import world\ntry:\n    world()\nexcept Exception as e:\n    print(e)"
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=tmp_path)
    assert done.stdout.startswith("the launcher started 3 processes (OMPI_COMM_WORLD_SIZE), but MPI sees 1")
