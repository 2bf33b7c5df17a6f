"""``cnnrun import``: an ONNX model as a cnnrun network file and a checkpoint of its weights."""

from __future__ import annotations

from pathlib import Path

import click

from .common import load_plugins, user_errors


def parse_shape(ctx, param, value):
    """``C,H,W`` (or ``C,L``, ``F``) as a tuple of positive integers."""
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise click.BadParameter(f"expected positive integers separated by commas, e.g. 3,224,224; got {value!r}")
    return shape


@click.command("import", short_help="Import an ONNX model as a network file and weights.")
@click.argument("model", metavar="MODEL.onnx", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for NAME.json and weights.npz (created if missing).")
@click.option("--name", help="The network's name (default: the model file's name without .onnx).")
@click.option("--input-shape", callback=parse_shape, metavar="C,H,W",
              help="The per-sample input shape, for a model whose input sizes are symbolic.")
@click.pass_context
def import_onnx(ctx: click.Context, model: str, out_dir: str, name: str | None, input_shape) -> None:
    """Convert MODEL.onnx (opset 7 or later; docs/onnx.md lists the operators) into DIR/NAME.json, a
    cnnrun network file, and DIR/weights.npz, a checkpoint that eval, predict, describe, profile and
    train --init take. Needs the onnx package: pip install 'cnnrun[onnx]'."""
    from cnnrun.engine import Network
    from cnnrun.engine.checkpoint import restore_network, save_checkpoint
    from cnnrun.engine.onnx.importer import onnx_to_cnnrun

    from .fuse import config_text

    _, registries = load_plugins(ctx)
    with user_errors():
        config, checkpoint = onnx_to_cnnrun(model, name=name, input_shape=input_shape, registry=registries.layers)
        network = Network.from_config(config, registry=registries.layers)
        restore_network(network, checkpoint, "the imported weights")
    out = Path(out_dir)
    json_path, weights_path = out / f"{network.name}.json", out / "weights.npz"
    try:
        out.mkdir(parents=True, exist_ok=True)
        json_path.write_text(config_text(config), encoding="utf-8")
        with user_errors():
            save_checkpoint(weights_path, checkpoint)
    except OSError as exc:
        raise click.ClickException(f"cannot write to {out}: {exc.strerror or exc}") from None
    click.echo(f"imported {len(network.nodes)} layers, {network.parameter_count():,} parameters")
    click.echo(f"wrote {json_path} and {weights_path}")
