"""``cnnrun train``: train a network from its JSON file, with progress, checkpoints and metrics."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from .common import device_option, load_plugins, net_argument, user_errors


def parse_setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (``0.5``, ``true``, ``[28, 28]``), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"expected KEY=VALUE, e.g. optimizer.momentum=0.5; got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


@click.command(short_help="Train a network from its JSON file.")
@net_argument
@click.option("--epochs", type=click.IntRange(min=1), help="Total number of epochs (a resumed run trains up to it).")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), help="Examples per batch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Base learning rate (train.optimizer.lr).")
@click.option("--seed", type=click.IntRange(min=0), help="Seed for initialization, the split, shuffling and dropout.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override any train key, e.g. --set optimizer.momentum=0.5 --set data.resize=[16,16].")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default: a new runs/<name>-<timestamp>, "
              "or the resumed run's folder). One that holds another run is refused without --force.")
@click.option("--force", is_flag=True, help="Replace the run in --out (its checkpoints, metrics and curves).")
@click.option("--resume", type=click.Path(exists=True), help="Continue from a run folder or a checkpoint file "
              "(one other than the run's latest.npz, e.g. best.npz, goes to a new run folder).")
@click.option("--init", type=click.Path(exists=True), help="Start from the weights of this checkpoint or run "
              "folder (train.init; e.g. the weights.npz of cnnrun import), with a fresh optimizer: fine-tuning.")
@device_option("Where to train: parameters, gradients, optimizer state and activations stay there.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the per-epoch summary lines (no progress bar).")
@click.pass_context
def train(ctx, net, epochs, batch_size, lr, seed, settings, out, force, resume, init, device, quiet):
    """Train NET.json with its "train" section (options override it), writing a run folder with
    config.json, metrics.jsonl, latest.npz, best.npz and curves.png. Ctrl-C or SIGTERM stops it
    (exit status 130 or 143) and prints the command that resumes it. Under mpiexec or srun, the
    processes train one model together, data-parallel (docs/distributed.md)."""
    from cnnrun.engine.distributed import world
    from cnnrun.engine.progress import Reporter, TextReporter
    from cnnrun.engine.train import TrainingInterrupted, train as run_training

    overrides = dict(parse_setting(s) for s in settings)
    init = init and str(Path(init).resolve())  # train.init is relative to the network file's folder
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("optimizer.lr", lr), ("seed", seed),
                       ("init", init)):
        if value is not None:
            overrides[key] = value
    _, registries = load_plugins(ctx)
    with user_errors():
        comm = world()  # under mpiexec or srun: this process's rank (rank 0 alone reports)
        reporter = TextReporter(sys.stdout, bar=False if quiet else None) if comm.is_root else Reporter()
        try:
            result = run_training(net, overrides=overrides, out=out, resume=resume, force=force,
                                  reporter=reporter, registries=registries, device=device, comm=comm)
        except TrainingInterrupted as stop:
            if stop.saved_epoch is None:
                click.echo(f"\n{stop.message} Nothing to resume: start it again.", err=True)
            else:
                command = resume_command(net, stop, batch_size, lr, seed, settings, device)
                click.echo(f"\n{stop.message} Resume with: {command}", err=True)
            ctx.exit(128 + stop.signal)
    if comm.is_root:
        click.echo(summary(result))


def resume_command(net, stop, batch_size, lr, seed, settings, device) -> str:
    """The whole ``cnnrun train`` command that continues an interrupted run with the same settings."""
    args = ["cnnrun", "train", net, "--resume", str(stop.run_dir), "--epochs", str(stop.epochs)]
    for option, value in (("--batch-size", batch_size), ("--lr", lr), ("--seed", seed)):
        if value is not None:
            args += [option, str(value)]
    for setting in settings:
        args += ["--set", setting]
    if device != "cpu":
        args += ["--device", device]
    return shlex.join(args)


def summary(result) -> str:
    """The closing lines: the best epoch and where the run's files are."""
    scored = [m for m in result.metrics if m.get("val_accuracy") is not None]
    lines = []
    if scored:
        best = max(scored, key=lambda m: m["val_accuracy"])
        lines.append(f"best validation accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}")
    lines.append(f"run folder: {result.run_dir}")
    return "\n".join(lines)
