"""Training into a run folder: the ``train`` section of a network file, checkpoints, metrics, resume.

``train("net.json")`` from Python does what ``cnnrun train net.json`` does on the command line: the
loop of ``net.fit`` (:class:`~cnnrun.engine.trainer.Trainer`) with the run folder written by a
callback (:class:`RunFolderWriter`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .callbacks import Callback, check_callbacks
from .checkpoint import Checkpoint, load_checkpoint, restore_network, save_checkpoint
from .distributed import OneProcess, world
from .early_stopping import score
from .errors import ConfigError
from .files import WriteError, copy_file, write_text
from .network import Network, read_network_file
from .plot import PLOT_HINT, write_curves
from .plugins import Registries, default_registries
from .progress import Reporter
from .provenance import explains_missing_plugins
from .run_folder import (BEST, CONFIG, CURVES, LATEST, METRICS, RunFolderError, RunLock, clear_run,
                         create_new_folder, folder_name, make_folder, metrics_up_to, read_metrics,
                         remove_temp_files, resolve_checkpoint, run_files, write_metrics)
from .stopping import TrainingInterrupted, TrainingStopped, interrupted, last_good, sigterm_as_interrupt
from .train_config import resolve_train_config
from .trainer import Trainer

__all__ = ["RunFolderWriter", "Trainer", "TrainResult", "TrainingInterrupted", "TrainingStopped", "train"]


@dataclass
class TrainResult:
    """What a training run leaves: the trained network, one metrics record per epoch (those of the
    run folder: a resumed run's earlier epochs too), the run folder."""

    network: Network
    metrics: list[dict] = field(default_factory=list)
    run_dir: Path | None = None


class RunFolderWriter(Callback):
    """The run folder of ``cnnrun train`` as a callback: after each epoch, best.npz (if improved),
    then latest.npz (then a copy of best.npz), then metrics.jsonl and metrics.csv.

    The folder (:mod:`cnnrun.engine.run_folder`) holds ``config.json`` (the network with its
    resolved train section), ``metrics.jsonl``, ``latest.npz`` and ``best.npz`` (highest validation
    accuracy, or lowest training loss without validation; by the early-stopping monitor when there is
    one) and ``curves.png`` when matplotlib is installed. The trainer stops before an epoch with a NaN
    or Inf in its state, or its validation loss, reaches this callback: the previous checkpoint stays.
    After a kill anywhere in between, resuming from latest.npz redoes or completes exactly what is missing.
    """

    def write_start(self, best: Checkpoint | None = None) -> None:
        """Write the starting state into a run folder that does not hold it yet: latest.npz, best.npz
        (``best``, or the starting state when it is the best so far) and the metrics so far."""
        trainer = self.trainer
        start = trainer.checkpoint(trainer.last_record)
        if best is None and trainer.last_record is not None and \
                score(trainer.last_record, trainer.monitor) == trainer.best:
            best = start
        self._write_checkpoints(start, best)
        write_metrics(trainer.run_dir / METRICS, trainer.history)

    def _write_checkpoints(self, latest: Checkpoint, best: Checkpoint | None) -> None:
        """best.npz (``best``, unless None), then latest.npz; the same checkpoint for both is
        serialized once and copied."""
        run_dir = self.trainer.run_dir
        if best is not None:
            save_checkpoint(run_dir / BEST, best)
        if best is latest:
            copy_file(run_dir / BEST, run_dir / LATEST)
        else:
            save_checkpoint(run_dir / LATEST, latest)

    def on_epoch_end(self, epoch, logs=None):
        trainer = self.trainer
        improved = trainer.best is None or score(logs, trainer.monitor) > trainer.best
        if improved:
            trainer.best = score(logs, trainer.monitor)
        checkpoint = trainer.checkpoint(logs)
        self._write_checkpoints(checkpoint, checkpoint if improved else None)
        write_metrics(trainer.run_dir / METRICS, trainer.history)


def train(network, *, overrides: dict | None = None, out=None, resume=None, force: bool = False,
          reporter: Reporter | None = None, registries: Registries | None = None, device: str = "cpu",
          callbacks=None, comm: OneProcess | None = None) -> TrainResult:
    """Train a network described by a JSON file path or a config dict.

    ``overrides``: dotted train keys (``{"epochs": 8, "optimizer.lr": 0.1}``); ``out``: the run folder
    (default: a new ``runs/<name>-<timestamp>``, or the resumed run's folder); a folder that already
    holds a run is refused unless ``force`` (its run files are then replaced). ``resume``: a run folder
    or a checkpoint file to continue from (``epochs`` is the total, so 4 done + ``epochs=8`` trains 4
    more); resuming from a checkpoint other than a run's latest.npz (best.npz, a copy) writes a new
    run folder and leaves that run as it is. A ``train.init`` checkpoint (``overrides={"init": PATH}``)
    gives the starting weights of a new run, for fine-tuning (no optimizer state). ``device``: "cpu"
    or "cuda" (parameters, gradients, optimizer state and activations stay there; checkpoints are the
    same either way, so a run can resume on the other device). ``callbacks`` (:mod:`cnnrun.engine.callbacks`) run before the run
    folder is written each epoch, and ``reporter`` after. ``comm``: the ranks of a data-parallel run
    (default: :func:`~cnnrun.engine.distributed.world`, MPI under ``mpiexec``; rank 0 alone writes the
    run folder, the others return a result without one; docs/distributed.md).
    """
    comm = comm or world()
    with comm.guard():
        return _train(network, overrides=overrides, out=out, resume=resume, force=force, reporter=reporter,
                      registries=registries, device=device, callbacks=callbacks, comm=comm)


@explains_missing_plugins("resume")
def _train(network, *, overrides, out, resume, force, reporter, registries, device, callbacks, comm) -> TrainResult:
    registries = registries or default_registries()
    if isinstance(network, dict):
        config, base_dir, source = copy.deepcopy(network), Path("."), None
    else:
        source = Path(network)
        config, base_dir = read_network_file(source), source.parent  # read and parsed once
    try:
        section = config.get("train") if isinstance(config, dict) else None  # not an object: from_config says so
        train_config = resolve_train_config(section, overrides)
        net = Network.from_config(config, registry=registries.layers, seed=train_config["seed"])
        net.to(device)
        writer = RunFolderWriter()
        trainer = Trainer(net, train_config, base_dir=base_dir, registries=registries, reporter=reporter,
                          callbacks=[*check_callbacks(callbacks), *([writer] if comm.is_root else [])], comm=comm)
    except ConfigError as err:
        raise (err.in_file(str(source)) if source else err) from None
    if not comm.is_root:  # rank 0 reads the checkpoint and writes the run folder; the others follow it
        comm.share_start(trainer)
        trainer.fit()
        return TrainResult(net, trainer.history, None)
    start = resolve_checkpoint(resume) if resume is not None else None
    if start is None and train_config["init"] is not None:
        init = resolve_checkpoint(base_dir / train_config["init"])  # weights only: a fresh optimizer
        restore_network(net, load_checkpoint(init), str(init))
    in_place = start is not None and start.name == LATEST and (out is None or _same_folder(out, start.parent))
    if start is not None and not in_place:
        if out is not None and _same_folder(out, start.parent):
            raise RunFolderError(f"cannot resume from {start} into its own run folder {start.parent}: that would "
                                 f"drop the run's later epochs; leave out --out (a new run folder is made) or "
                                 f"choose another")
        trainer.restore(load_checkpoint(start), str(start))
    with sigterm_as_interrupt():
        if in_place:
            folder = start.parent
        elif out is not None:
            folder = make_folder(out)
        else:
            folder = create_new_folder("runs", f"{folder_name(net.name)}-{datetime.now():%Y%m%d-%H%M%S}")
        trainer.run_dir = folder
        with RunLock(folder) as lock:
            if lock.stale_pid:
                trainer.reporter.note(f"took over {lock.path} from pid {lock.stale_pid}, which is no longer running")
            if start is not None and not in_place:
                trainer.reporter.note(f"resuming {start} (epoch {trainer.epoch}) in the run folder {folder}; "
                                      f"{start.parent} is left as it is")
            started = False
            try:
                try:
                    _prepare_folder(trainer, writer, start, in_place, force)
                    started = True
                    write_text(folder / CONFIG, json.dumps({**config, "train": train_config}, indent=2) + "\n")
                    if trainer.epoch == train_config["epochs"]:
                        trainer.reporter.note(f"nothing to train: {start} already holds all {trainer.epoch} "
                                              f"epochs (--epochs is the total; pass a larger one to train on)")
                    comm.share_start(trainer)
                    trainer.fit()
                finally:
                    if started:
                        _draw_curves(trainer)
            except KeyboardInterrupt as exc:  # also one during the curves: the message says what is on disk
                raise interrupted(exc, folder, trainer.epoch, train_config["epochs"]) from None
            except WriteError as err:
                raise TrainingStopped(f"{err}; training stopped. {last_good(folder)}") from None
    return TrainResult(net, trainer.history, folder)


def _same_folder(a, b) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _prepare_folder(trainer: Trainer, writer: RunFolderWriter, start: Path | None, in_place: bool,
                    force: bool) -> None:
    """With the lock held: check the folder, remove a killed run's temporary files, and bring
    latest.npz, best.npz and metrics.jsonl to the starting state."""
    folder = trainer.run_dir
    if in_place:
        remove_temp_files(folder)
        trainer.restore(load_checkpoint(start), str(start))  # read again under the lock
        trainer.history = metrics_up_to(read_metrics(folder / METRICS), trainer.epoch, trainer.last_record)
        write_metrics(folder / METRICS, trainer.history)
        return
    held = run_files(folder)
    if held and not force:
        raise RunFolderError(f"{folder} already holds a run ({', '.join(held)}); resume it with --resume {folder}, "
                             f"choose another --out, or pass --force to replace it")
    clear_run(folder)
    remove_temp_files(folder)
    best = None
    if start is not None:
        trainer.history = metrics_up_to(read_metrics(start.parent / METRICS), trainer.epoch, trainer.last_record)
        candidate = start.parent / BEST
        if start.name != BEST and candidate.is_file():
            best = load_checkpoint(candidate)
            if not isinstance(best.meta.get("epoch"), int) or best.meta["epoch"] > trainer.epoch:
                best = None  # a later epoch than the one resumed from: not this run's history
    writer.write_start(best)


def _draw_curves(trainer: Trainer) -> None:
    """curves.png; one that cannot be drawn or written is a warning: the run itself is complete."""
    if not trainer.history:
        return
    try:
        drawn = write_curves(trainer.history, trainer.run_dir / CURVES, trainer.monitor)
    except WriteError as err:
        trainer.reporter.warning(f"{err} (the checkpoints and metrics are not affected)")
        return
    if not drawn:
        trainer.reporter.note(PLOT_HINT)
