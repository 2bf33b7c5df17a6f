"""``cnnrun predict``: class probabilities for new inputs (.npz arrays, image files, folders of images)."""

from __future__ import annotations

import json

import click

from .common import (device_option, format_option, inference_checkpoint_option, load_plugins, net_argument,
                     user_errors)


@click.command(short_help="Class probabilities and labels for new inputs.")
@net_argument
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path(exists=True))
@inference_checkpoint_option
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the predictions to exactly this file instead of printing them: a .csv (input, label, "
                   "class, one probability column per class), else an .npz (probabilities, labels, inputs, "
                   "class_names); never onto an input or the checkpoint.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many of the most probable classes to print per input (capped at the number of classes).")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=256, show_default=True, help="Examples per batch.")
@device_option("Where to run the network.")
@format_option
@click.pass_context
def predict(ctx, net, inputs, checkpoint, out, top_k, batch_size, device, output_format):
    """Predict the classes of image files, folders of images or .npz arrays.

    Each INPUT is an .npz with an array x shaped like the training inputs, an image file (PNG, JPEG,
    BMP, WebP: converted to the network's channels, resized to its input size, scaled to [0, 1] and
    normalized as in training; no augmentation), or a folder of images. Prints the --top-k most
    probable classes of each, or writes every probability to --out. A run folder's best.npz is used."""
    from cnnrun.engine.inference import inference_checkpoint, predict as run_predict, predict_file

    _, registries = load_plugins(ctx)
    with user_errors():
        if out is not None:
            count = predict_file(net, checkpoint, list(inputs), out, batch_size=batch_size,
                                 registries=registries, device=device)
            click.echo(f"checkpoint {inference_checkpoint(checkpoint)}")
            click.echo(f"wrote predictions for {count} examples to {out}")
            return
        predictions, trained = run_predict(net, checkpoint, list(inputs), batch_size=batch_size,
                                           registries=registries, device=device)
    top = predictions.top(min(top_k, len(predictions.class_names)))
    names = predictions.class_names
    if output_format == "json":
        rows = [{"input": name, "top": [{"label": c, "class": names[c], "probability": p} for c, p in ranked]}
                for name, ranked in zip(predictions.inputs, top)]
        click.echo(json.dumps({"checkpoint": str(trained.checkpoint), "epoch": trained.meta.get("epoch"),
                               "predictions": rows}, indent=2))
        return
    click.echo(f"checkpoint {trained.describe_checkpoint()}")
    width = max(map(len, predictions.inputs))
    for name, ranked in zip(predictions.inputs, top):
        click.echo(f"{name:<{width}}  " + "  ".join(f"{names[c]} {p:.4f}" for c, p in ranked))
