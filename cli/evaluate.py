"""``cnnrun eval``: loss, top-1 and top-k accuracy, per-class accuracy and the confusion matrix of a
trained network."""

from __future__ import annotations

import json

import click

from .common import (device_option, format_option, inference_checkpoint_option, load_plugins, net_argument,
                     user_errors)


@click.command("eval", short_help="Loss, accuracy and confusion matrix on a data set.")
@net_argument
@inference_checkpoint_option
@click.option("--data", "data", metavar="JSON|FILE.npz|FOLDER",
              help='Data to evaluate: a train.data object as JSON (e.g. \'{"type": "npz", "path": "test.npz"}\'), '
                   "an .npz file with x and y, a folder of class folders of images, or a CIFAR binary folder "
                   "(its test file). Default: the validation split of the training data.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=256, show_default=True, help="Examples per batch.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Also report top-k accuracy (capped at the number of classes).")
@device_option("Where to run the network.")
@format_option
@click.pass_context
def evaluate(ctx, net, checkpoint, data, batch_size, top_k, device, output_format):
    """Evaluate a trained network: loss, top-k and per-class accuracy, confusion matrix.

    A run folder's best.npz is used. The confusion matrix has a row per true class and a column per
    predicted class, named by the training data's class names (class numbers where it had none)."""
    from cnnrun.engine.inference import evaluate_checkpoint
    from cnnrun.engine.options import json_safe

    _, registries = load_plugins(ctx)
    with user_errors():
        report = evaluate_checkpoint(net, checkpoint, data=parse_data_option(data), batch_size=batch_size,
                                     top_k=top_k, registries=registries, device=device)
    if output_format == "json":
        click.echo(json.dumps(json_safe(report), indent=2, allow_nan=False))
        return
    epoch = f" (epoch {report['epoch']})" if report["epoch"] is not None else ""
    click.echo(f"checkpoint {report['checkpoint']}{epoch}")
    click.echo(f"{report['examples']} examples  loss {report['loss']:.4f}  accuracy {report['accuracy']:.4f}  "
               f"top-{report['top_k']} accuracy {report['top_k_accuracy']:.4f}")
    click.echo(format_per_class(report["per_class"]))
    click.echo(format_confusion(report["confusion_matrix"], report["class_names"]))


def parse_data_option(text: str | None):
    """``--data``: None, a JSON object, or a path (an .npz file or a folder: the engine decides)."""
    if text is None:
        return None
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc.msg}", param_hint="--data") from None
        except RecursionError:
            raise click.BadParameter("not valid JSON: nested too deeply", param_hint="--data") from None
    return text


def format_per_class(per_class: list[dict]) -> str:
    """One line per class: its name, number of examples and accuracy (``-`` without examples)."""
    width = max(len("class"), *(len(c["class"]) for c in per_class))
    lines = [f"{'class':<{width}}  examples  accuracy"]
    for c in per_class:
        accuracy = "-" if c["accuracy"] is None else f"{c['accuracy']:.4f}"
        lines.append(f"{c['class']:<{width}}  {c['examples']:>8}  {accuracy:>8}")
    return "\n".join(lines)


def format_confusion(matrix: list[list[int]], names: list[str]) -> str:
    """The confusion matrix with class names on both axes (rows: true, columns: predicted; a column
    heading is cut to the column's width)."""
    width = max(len(str(max(map(max, matrix)))), min(max(map(len, names)), 8), 3)
    corner = "true\\pred"
    label = max(len(corner), *map(len, names))
    head = corner.ljust(label) + " " + " ".join(n[:width].rjust(width) for n in names)
    rows = [f"{n:<{label}} " + " ".join(str(v).rjust(width) for v in row) for n, row in zip(names, matrix)]
    return "\n".join([head, *rows])
