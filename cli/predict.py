"""``cnnrun predict``: class probabilities and labels for new inputs."""

from __future__ import annotations

import click

from .common import checkpoint_option, device_option, load_plugins, net_argument, user_errors


@click.command(short_help="Class probabilities and labels for new inputs.")
@net_argument
@click.argument("inputs", metavar="INPUT.npz", type=click.Path(exists=True, dir_okay=False))
@checkpoint_option
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the predictions: an .npz with probabilities and labels, written to exactly "
                   "this path (never onto INPUT.npz or the checkpoint).")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=256, show_default=True, help="Examples per batch.")
@device_option("Where to run the network.")
@click.pass_context
def predict(ctx, net, inputs, checkpoint, out, batch_size, device):
    """Predict the class of each example in INPUT.npz (array x, shaped like the training inputs);
    writes probabilities (N, classes) and labels (N,) to --out."""
    from cnnrun.engine.inference import predict_file

    _, registries = load_plugins(ctx)
    with user_errors():
        count = predict_file(net, checkpoint, inputs, out, batch_size=batch_size, registries=registries,
                             device=device)
    click.echo(f"wrote predictions for {count} examples to {out}")
