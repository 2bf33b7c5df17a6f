"""``cnnrun export``: a trained network as an ONNX model, for runtimes such as onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import inference_checkpoint_option, load_plugins, net_argument, user_errors


@click.command(short_help="Write a trained network as an ONNX model.")
@net_argument
@inference_checkpoint_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The ONNX file to write (MODEL.onnx).")
@click.option("--opset", type=int, default=None,
              help="The ONNX opset to write: 13 to the newest the installed onnx knows. [default: 17]")
@click.option("--fuse", is_flag=True, help="Fold every batchnorm that follows a conv or linear layer into it.")
@click.pass_context
def export(ctx: click.Context, net: str, checkpoint: str, out: str, opset: int | None, fuse: bool) -> None:
    """Write the network NET.json with the weights of a checkpoint as an ONNX model (evaluation mode,
    a dynamic batch axis). Inputs are expected normalized as in training: the model's metadata holds
    the checkpoint's normalization and class names (JSON). Needs `pip install 'cnnrun[onnx]'`."""
    from cnnrun.engine.fuse import foldable_pairs
    from cnnrun.engine.inference import load_for_inference
    from cnnrun.engine.onnx.exporter import export_onnx, onnx_package

    _, registries = load_plugins(ctx)
    with user_errors():
        onnx_package()
        trained = load_for_inference(net, checkpoint, registries)
        for what, path in (("the network file", Path(net)), ("the checkpoint", trained.checkpoint)):
            if Path(out).resolve() == path.resolve():
                raise click.ClickException(f"--out {out} is {what}: writing there would destroy it; "
                                           "choose another file")
        metadata = {key: json.dumps(trained.meta[key]) for key in ("normalization", "class_names")
                    if trained.meta.get(key) is not None}
        model = export_onnx(trained.net, out, opset=opset, fuse=fuse, metadata=metadata)
    click.echo(f"checkpoint {trained.describe_checkpoint()}")
    if fuse:
        click.echo(f"folded {len(foldable_pairs(trained.net))} batchnorm layers")
    shape = lambda s: f"(N, {', '.join(map(str, s))})"
    click.echo(f"wrote {out} (opset {model.opset_import[0].version}, input 'input' {shape(trained.net.input_shape)}, "
               f"output 'output' {shape(trained.net.output_shape)})")
