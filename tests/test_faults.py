"""Fault injection: kill -9 at random moments, SIGINT, SIGTERM, ENOSPC and EACCES on every kind of
write, planted symbolic links, two runs on one folder, a resume from best.npz.

After each fault: every checkpoint loads, resuming reproduces the straight run bit for bit,
metrics.jsonl holds every finished epoch exactly once, and nothing outside the run folder changed.
Runs in subprocesses are compared with a straight run in a subprocess (same thread count), runs in
this process with one in this process.
"""

import copy
import errno
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from cnnrun.engine.checkpoint import load_checkpoint
from cnnrun.engine.files import WriteError, is_temp_file
from cnnrun.engine.run_folder import WRITTEN, RunFolderError, read_metrics
from cnnrun.engine.stopping import TrainingInterrupted, TrainingStopped
from cnnrun.engine.train import train
from helpers import without_timing

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and POSIX signals")

NET = {
    "name": "faults",
    "input": {"shape": [1, 8, 8]},
    "layers": [
        {"type": "flatten"},
        {"name": "fc1", "type": "linear", "out_features": 16},
        {"name": "bn", "type": "batchnorm"},
        {"type": "relu"},
        {"type": "dropout", "p": 0.2},
        {"name": "fc2", "type": "linear", "out_features": 10},
    ],
    "train": {"optimizer": {"type": "adam", "lr": 0.01}, "schedule": {"type": "step", "step_size": 2},
              "epochs": 4, "batch_size": 128},
}
SLOW = copy.deepcopy(NET)  # for the subprocesses: long enough to be hit mid-run, ~1 s of training
SLOW["train"].update(epochs=40, batch_size=32, schedule={"type": "cosine"})
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "NUMBA_NUM_THREADS": "1"}


# -- what every fault must leave ------------------------------------------------------------------

def checkpoints_load(folder):
    """Every .npz in ``folder`` loads; returns {name: Checkpoint}."""
    return {p.name: load_checkpoint(p) for p in sorted(Path(folder).glob("*.npz"))}


def assert_consistent(folder):
    """After a fault: every checkpoint loads, and metrics.jsonl holds epochs 1..k once each, where k is
    latest.npz's epoch or one less (a kill between the checkpoint and its metrics line)."""
    loaded = checkpoints_load(folder)
    epochs = [r["epoch"] for r in read_metrics(Path(folder) / "metrics.jsonl")]
    assert epochs == list(range(1, len(epochs) + 1)), epochs
    if "latest.npz" in loaded:
        assert loaded["latest.npz"].meta["epoch"] - len(epochs) in (0, 1), (loaded["latest.npz"].meta, epochs)
    return loaded


def assert_same_run(folder, straight):
    """``folder`` finished the run exactly as ``straight`` did: checkpoints bit for bit, the same
    metrics once per epoch, no temporary files left."""
    mine, theirs = checkpoints_load(folder), checkpoints_load(straight)
    for name in ("latest.npz", "best.npz"):
        a, b = mine[name], theirs[name]
        assert a.meta["epoch"] == b.meta["epoch"], name
        for tree in ("params", "buffers"):
            for layer, arrays in getattr(b, tree).items():
                for key, value in arrays.items():
                    np.testing.assert_array_equal(getattr(a, tree)[layer][key], value, err_msg=f"{name} {layer}.{key}")
        assert a.optimizer.keys() == b.optimizer.keys()
        for key, value in b.optimizer.items():
            np.testing.assert_array_equal(a.optimizer[key], value, err_msg=f"{name} optim {key}")
    assert without_timing(read_metrics(Path(folder) / "metrics.jsonl")) == \
        without_timing(read_metrics(Path(straight) / "metrics.jsonl"))
    assert not [p.name for p in Path(folder).iterdir() if is_temp_file(p.name, WRITTEN)]


def snapshot(root, *skip):
    """{path: (size, mtime, bytes hash)} of everything under ``root`` except the folders ``skip``."""
    skip = [Path(s).resolve() for s in skip]
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath).resolve()
        if any(here == s or s in here.parents for s in skip):
            dirnames[:] = []
            continue
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            st = path.lstat()
            seen[str(path)] = (st.st_size, st.st_mtime_ns, path.read_bytes() if path.is_file() else None)
    return seen


# -- in this process --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def straight(tmp_path_factory, registries):
    """NET trained 4 epochs straight."""
    folder = tmp_path_factory.mktemp("straight") / "run"
    train(copy.deepcopy(NET), out=folder, registries=registries)
    return folder


def fail_nth_write(monkeypatch, name, nth, error):
    """Make the ``nth`` write of the file ``name`` fail: ENOSPC from fsync (a full disk reports it
    when the data is flushed), EACCES when creating the temporary file (a read-only folder)."""
    calls = {"n": 0}

    def hit():
        calls["n"] += 1
        return calls["n"] == nth

    if error == errno.ENOSPC:
        real_fsync = os.fsync

        def fsync(fd):
            target = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            if is_temp_file(target, [name]) and hit():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, **kwargs):
            if kwargs.get("prefix") == f".{name}." and hit():
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir"))
            return real_mkstemp(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return calls


# (file, which of its writes fails): latest.npz and metrics.jsonl are first written at the start (the
# epoch-0 state), so their 2nd write is epoch 1's; best.npz is first written at epoch 1, config.json
# once at the start.
WRITES = [("latest.npz", 2), ("latest.npz", 3), ("best.npz", 1), ("metrics.jsonl", 2), ("config.json", 1)]


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES], ids=["ENOSPC", "EACCES"])
@pytest.mark.parametrize("name, nth", WRITES)
def test_a_failed_write_stops_cleanly_and_the_run_resumes_exactly(tmp_path, monkeypatch, registries, straight,
                                                                  name, nth, error):
    folder = tmp_path / "run"
    before = snapshot(tmp_path)
    calls = fail_nth_write(monkeypatch, name, nth, error)
    with pytest.raises(TrainingStopped) as stop:
        train(copy.deepcopy(NET), out=folder, registries=registries)
    assert calls["n"] == nth
    cause = os.strerror(error)
    assert re.fullmatch(rf"cannot write {re.escape(str(folder / name))}: {cause}; training stopped\. "
                        rf"The last good checkpoint is {re.escape(str(folder))}/latest\.npz \(epoch \d\)", str(stop.value))
    kept = assert_consistent(folder)
    assert f"(epoch {kept['latest.npz'].meta['epoch']})" in str(stop.value)  # what is on disk
    assert not [p for p in folder.iterdir() if is_temp_file(p.name, WRITTEN)]
    assert snapshot(tmp_path, folder) == before
    monkeypatch.undo()
    train(copy.deepcopy(NET), resume=folder, registries=registries)
    assert_same_run(folder, straight)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES], ids=["ENOSPC", "EACCES"])
def test_curves_that_cannot_be_written_are_a_warning(tmp_path, monkeypatch, registries, straight, error):
    pytest.importorskip("matplotlib")
    folder = tmp_path / "run"
    fail_nth_write(monkeypatch, "curves.png", 1, error)
    with pytest.warns(RuntimeWarning, match=rf"cannot write {re.escape(str(folder))}/curves\.png: "
                                            rf"{os.strerror(error)} \(the checkpoints and metrics are not affected\)"):
        result = train(copy.deepcopy(NET), out=folder, registries=registries)
    assert [m["epoch"] for m in result.metrics] == [1, 2, 3, 4]
    assert not (folder / "curves.png").exists()
    assert_same_run(folder, straight)


def test_a_read_only_run_resumes_into_another_folder(tmp_path, monkeypatch, registries, straight):
    folder, elsewhere = tmp_path / "ro", tmp_path / "elsewhere"
    train(copy.deepcopy(NET), overrides={"epochs": 2}, out=folder, registries=registries)
    before = snapshot(tmp_path)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(RunFolderError, match=rf"^cannot create the lock file {re.escape(str(folder))}/\.lock: "
                                             r"Permission denied \(a read-only run can be resumed into another "
                                             r"folder with --out\)$"):
        train(copy.deepcopy(NET), resume=folder, registries=registries)
    assert snapshot(tmp_path) == before
    train(copy.deepcopy(NET), resume=folder, out=elsewhere, registries=registries)
    assert snapshot(tmp_path, elsewhere) == before
    assert_same_run(elsewhere, straight)


def test_a_full_disk_when_writing_the_lock(tmp_path, monkeypatch, registries):
    real_write = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/.lock"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(WriteError, match=rf"^cannot write the lock file {re.escape(str(tmp_path))}/run/\.lock: "
                                             r"No space left on device$"):
        train(copy.deepcopy(NET), out=tmp_path / "run", registries=registries)


def test_out_in_a_read_only_folder(tmp_path, monkeypatch, registries):
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "ro")):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(WriteError, match=rf"^cannot create run folder {re.escape(str(tmp_path))}/ro/new: "
                                        r"Permission denied$"):
        train(copy.deepcopy(NET), out=tmp_path / "ro" / "new", registries=registries)
    assert list((tmp_path / "ro").iterdir()) == []


def test_planted_symlinks_are_not_written_through(tmp_path, registries, straight):
    folder = tmp_path / "run"
    train(copy.deepcopy(NET), overrides={"epochs": 2}, out=folder, registries=registries)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    # the temporary names earlier versions used (predictable: name.PID.tmp), and the run files themselves
    for name in WRITTEN:
        (folder / f".{name}.{os.getpid()}.tmp").symlink_to(victim)
    (folder / "curves.png").unlink()
    (folder / "curves.png").symlink_to(victim)
    metrics = (folder / "metrics.jsonl").read_text()
    (folder / "metrics.jsonl").unlink()
    (tmp_path / "metrics-victim.jsonl").write_text(metrics)
    (folder / "metrics.jsonl").symlink_to(tmp_path / "metrics-victim.jsonl")
    before = snapshot(tmp_path, folder)
    train(copy.deepcopy(NET), resume=folder, registries=registries)
    assert snapshot(tmp_path, folder) == before
    assert victim.read_text() == "precious" and (tmp_path / "metrics-victim.jsonl").read_text() == metrics
    assert not (folder / "metrics.jsonl").is_symlink()
    assert_same_run(folder, straight)


def test_a_planted_lock_symlink_is_refused(tmp_path, registries):
    folder = tmp_path / "run"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (folder / ".lock").symlink_to(victim)
    with pytest.raises(RunFolderError, match=r"\.lock is a symbolic link, not cnnrun's lock file"):
        train(copy.deepcopy(NET), out=folder, registries=registries)
    assert victim.read_text() == "precious"


def test_interrupt_in_a_checkpoint_write_reports_what_is_on_disk(tmp_path, monkeypatch, registries, straight):
    """Ctrl-C just before latest.npz of epoch 2 replaces that of epoch 1: the message says epoch 1."""
    folder = tmp_path / "run"
    real_replace, seen = os.replace, []

    def replace(src, dst):
        if Path(dst).name == "latest.npz":
            seen.append(dst)
            if len(seen) == 3:  # epoch 0, epoch 1, then epoch 2
                raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(TrainingInterrupted, match=r"interrupted during epoch 3 \(SIGINT\); the checkpoint "
                                                   r".*latest\.npz holds epoch 1\.") as stop:
        train(copy.deepcopy(NET), out=folder, registries=registries)
    assert stop.value.saved_epoch == 1
    assert_consistent(folder)
    monkeypatch.undo()
    train(copy.deepcopy(NET), resume=folder, registries=registries)
    assert_same_run(folder, straight)


def test_interrupt_while_drawing_the_curves(tmp_path, monkeypatch, registries, straight):
    """Ctrl-C after the last epoch, while curves.png is drawn: resuming finishes the curves only."""
    pytest.importorskip("matplotlib")
    import cnnrun.engine.train as train_module

    folder = tmp_path / "run"
    real_write_curves = train_module.write_curves

    def interrupted_curves(metrics, path, monitor="val_accuracy"):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "write_curves", interrupted_curves)
    with pytest.raises(TrainingInterrupted, match=r"^interrupted after epoch 4, the last \(SIGINT\); the checkpoint "
                                                   r".*latest\.npz holds epoch 4\. Resume with --resume "):
        train(copy.deepcopy(NET), out=folder, registries=registries)
    assert not (folder / "curves.png").exists()
    monkeypatch.setattr(train_module, "write_curves", real_write_curves)
    notes = []

    class Notes:
        def epoch_start(self, *a): pytest.fail("nothing should be trained")
        def note(self, text): notes.append(text)

    result = train(copy.deepcopy(NET), resume=folder, registries=registries, reporter=Notes())
    assert [m["epoch"] for m in result.metrics] == [1, 2, 3, 4]
    assert any(re.search(r"nothing to train: .*latest\.npz already holds all 4 epochs", n) for n in notes)
    assert (folder / "curves.png").exists()
    assert_same_run(folder, straight)


def test_two_runs_on_one_folder_in_this_process(tmp_path, registries, straight):
    """The second run is refused naming the holder's pid; the first is not disturbed."""
    folder = tmp_path / "run"
    from cnnrun.engine.run_folder import RunLock

    folder.mkdir()
    with RunLock(folder):
        with pytest.raises(RunFolderError, match=rf"{re.escape(str(folder))} is in use by another training run "
                                                 rf"\(pid {os.getpid()}, see .*\.lock\)"):
            train(copy.deepcopy(NET), out=folder, registries=registries)
        assert [p.name for p in folder.iterdir()] == [".lock"]
    train(copy.deepcopy(NET), out=folder, registries=registries)
    assert_same_run(folder, straight)


def test_resume_from_best_leaves_the_run_alone(tmp_path, monkeypatch, registries, straight):
    """best.npz at epoch 2, latest.npz at epoch 4 (validation accuracy peaked at 2): resuming from
    best.npz writes a new run folder that ends exactly like the straight run; the old run stays."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "run"
    train(copy.deepcopy(NET), overrides={"epochs": 2}, out=folder, registries=registries)
    shutil.copy(folder / "latest.npz", tmp_path / "epoch2.npz")
    train(copy.deepcopy(NET), resume=folder, registries=registries)
    shutil.copy(tmp_path / "epoch2.npz", folder / "best.npz")
    before = snapshot(tmp_path, tmp_path / "runs")
    result = train(copy.deepcopy(NET), resume=folder / "best.npz", registries=registries)
    assert result.run_dir.parent == Path("runs") and result.run_dir.name.startswith("faults-")
    assert snapshot(tmp_path, tmp_path / "runs") == before
    assert_same_run(result.run_dir, straight)
    with pytest.raises(RunFolderError, match=r"cannot resume from .*best\.npz into its own run folder .*: that "
                                             r"would drop the run's later epochs"):
        train(copy.deepcopy(NET), resume=folder / "best.npz", out=folder, registries=registries)
    assert snapshot(tmp_path, tmp_path / "runs") == before


# -- in subprocesses ---------------------------------------------------------------------------------

def cli(*args, cwd):
    return [sys.executable, "-m", "cnnrun.cli", "train", *map(str, args)], dict(cwd=cwd, env=ENV)


def start(*args, cwd):
    command, options = cli(*args, cwd=cwd)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """SLOW's network file, its straight run in a subprocess, and that run's wall time."""
    root = tmp_path_factory.mktemp("slow")
    (root / "slow.json").write_text(json.dumps(SLOW))
    began = time.monotonic()
    proc = start(root / "slow.json", "--out", root / "straight", "-q", cwd=root)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return root / "slow.json", root / "straight", time.monotonic() - began


def test_kill_9_at_20_random_moments(tmp_path, slow):
    """Each kill is followed by a resume (itself killed in turn) until the run has all its epochs;
    then it is finished and compared with the straight run, bit for bit."""
    net, straight, seconds = slow
    moments = random.Random(8)
    kills, chains = 0, 0
    while kills < 20:
        folder, done, epoch = tmp_path / f"chain{chains}", False, 0
        while kills < 20 and epoch < SLOW["train"]["epochs"]:
            args = ("--resume", folder) if (folder / "latest.npz").exists() else ("--out", folder)
            before = snapshot(tmp_path, folder)
            proc = start(net, *args, "-q", cwd=tmp_path)
            try:
                proc.wait(timeout=moments.uniform(0.3, seconds))
            except subprocess.TimeoutExpired:
                proc.kill()
            out, err = proc.communicate(timeout=120)
            assert snapshot(tmp_path, folder) == before
            if proc.returncode == 0:
                done = True
                break
            assert proc.returncode == -signal.SIGKILL, err
            kills += 1
            if folder.exists():
                kept = assert_consistent(folder)
                epoch = kept["latest.npz"].meta["epoch"] if "latest.npz" in kept else 0
        if (folder / "latest.npz").exists():
            if not done:  # killed after its last epoch (drawing curves), or the 20th kill came
                finish = start(net, "--resume", folder, "-q", cwd=tmp_path)
                assert finish.wait(timeout=300) == 0, finish.stderr.read()
            assert_same_run(folder, straight)
        chains += 1


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_sigint_and_sigterm_stop_and_print_the_whole_resume_command(tmp_path, slow, signum, status):
    pytest.importorskip("matplotlib")
    net, straight, _ = slow
    folder = tmp_path / "run"
    before = snapshot(tmp_path.parent, folder)
    # overrides that equal the file's values, so the run is still the straight one
    proc = start(net, "--out", folder, "--lr", "0.01", "--set", "optimizer.betas=[0.9, 0.999]", cwd=tmp_path)
    first = proc.stdout.readline()
    assert re.match(r"epoch +1/40  train loss", first), first + proc.stderr.read()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    match = re.search(rf"interrupted during epoch (\d+) \({name}\); the checkpoint {re.escape(str(folder))}/"
                      rf"latest\.npz holds epoch (\d+)\. Resume with: (.*)$", err, re.M)
    assert match, err
    kept = assert_consistent(folder)
    assert int(match.group(2)) == kept["latest.npz"].meta["epoch"]
    assert (folder / "curves.png").exists() == bool(read_metrics(folder / "metrics.jsonl"))
    command = shlex.split(match.group(3))
    assert command == ["cnnrun", "train", str(net), "--resume", str(folder), "--epochs", "40", "--lr", "0.01",
                       "--set", "optimizer.betas=[0.9, 0.999]"]
    resumed = subprocess.run([sys.executable, "-m", "cnnrun.cli", *command[1:], "-q"], cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(folder, straight)
    assert snapshot(tmp_path.parent, folder) == before


def test_two_runs_on_one_folder(tmp_path, slow):
    """A second run on a folder in use is one line naming the first run's pid; the first run ends as
    the straight run does."""
    from click.testing import CliRunner

    from cnnrun.cli.main import cli as cnnrun

    net, straight, _ = slow
    folder = tmp_path / "run"
    before = snapshot(tmp_path.parent, folder)
    first = start(net, "--out", folder, cwd=tmp_path)
    assert first.stdout.readline().startswith("epoch")
    first.send_signal(signal.SIGSTOP)  # hold it mid-run, lock and all
    try:
        second = CliRunner().invoke(cnnrun, ["train", str(net), "--out", str(folder)])
        resumed = CliRunner().invoke(cnnrun, ["train", str(net), "--resume", str(folder)])
    finally:
        first.send_signal(signal.SIGCONT)
    for result in (second, resumed):
        assert result.exit_code == 1
        assert result.output.strip().splitlines()[-1] == (
            f"Error: {folder} is in use by another training run (pid {first.pid}, see {folder}/.lock); "
            f"wait for it to end or choose another --out")
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert_same_run(folder, straight)
    assert snapshot(tmp_path.parent, folder) == before


@pytest.mark.parametrize("name, nth, status, kept", [("latest.npz", 2, 1, 0), ("metrics.jsonl", 3, 1, 2),
                                                     ("curves.png", 1, 0, 4)])
def test_the_command_line_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, name, nth, status, kept):
    """exit 1 and one Error line for a checkpoint or metrics; for curves.png a Warning line and exit 0."""
    from click.testing import CliRunner

    from cnnrun.cli.main import cli as cnnrun

    if name == "curves.png":
        pytest.importorskip("matplotlib")
    net = tmp_path / "net.json"
    net.write_text(json.dumps(NET))
    folder = tmp_path / "run"
    fail_nth_write(monkeypatch, name, nth, errno.ENOSPC)
    result = CliRunner().invoke(cnnrun, ["train", str(net), "--out", str(folder), "-q"])
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    line = f"cannot write {folder / name}: No space left on device"
    if status:
        assert result.stderr.splitlines() == [f"Error: {line}; training stopped. The last good checkpoint is "
                                              f"{folder}/latest.npz (epoch {kept})"]
    else:
        assert result.stderr.splitlines() == [f"Warning: {line} (the checkpoints and metrics are not affected)"]
        assert result.stdout.splitlines()[-1] == f"run folder: {folder}"
    assert assert_consistent(folder)["latest.npz"].meta["epoch"] == kept
