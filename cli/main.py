"""The ``cnnrun`` command group. Commands live one per module and import the engine lazily,
so ``cnnrun --help`` stays fast (no NumPy, no Numba)."""

from __future__ import annotations

import click

from cnnrun import __version__

from .describe import describe
from .evaluate import evaluate
from .export import export
from .fuse import fuse
from .import_onnx import import_onnx
from .plugins import plugins
from .predict import predict
from .profile import profile
from .train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnnrun")
@click.option("--strict-plugins", is_flag=True,
              help="Fail when a plugin cannot be loaded or registers something wrong "
                   "(default: warn, skip that plugin and go on).")
@click.pass_context
def cli(ctx: click.Context, strict_plugins: bool) -> None:
    """cnnrun: describe, train and evaluate convolutional networks written in JSON."""
    ctx.obj = {"strict_plugins": strict_plugins}


for command in (describe, train, evaluate, predict, profile, fuse, import_onnx, export, plugins):
    cli.add_command(command)
