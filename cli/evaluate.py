"""``cnnrun eval``: loss, accuracy and the confusion matrix of a trained network."""

from __future__ import annotations

import json

import click

from .common import checkpoint_option, device_option, format_option, load_plugins, net_argument, user_errors


@click.command("eval", short_help="Loss, accuracy and confusion matrix on a data set.")
@net_argument
@checkpoint_option
@click.option("--data", "data", metavar="JSON|FILE.npz",
              help='Data to evaluate: a train.data object as JSON (e.g. \'{"type": "npz", "path": "test.npz"}\') '
                   "or an .npz file with x and y. Default: the validation split of the training data.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=256, show_default=True, help="Examples per batch.")
@device_option("Where to run the network.")
@format_option
@click.pass_context
def evaluate(ctx, net, checkpoint, data, batch_size, device, output_format):
    """Evaluate a trained network: loss, accuracy and a confusion matrix (rows: true class)."""
    from cnnrun.engine.inference import evaluate_checkpoint
    from cnnrun.engine.options import json_safe

    _, registries = load_plugins(ctx)
    with user_errors():
        report = evaluate_checkpoint(net, checkpoint, data=parse_data_option(data), batch_size=batch_size,
                                     registries=registries, device=device)
    if output_format == "json":
        click.echo(json.dumps(json_safe(report), indent=2, allow_nan=False))
        return
    click.echo(f"{report['examples']} examples  loss {report['loss']:.4f}  accuracy {report['accuracy']:.4f}")
    click.echo(format_confusion(report["confusion_matrix"]))


def parse_data_option(text: str | None):
    """``--data``: None, a JSON object, or the path of an .npz file."""
    if text is None:
        return None
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc.msg}", param_hint="--data") from None
        except RecursionError:
            raise click.BadParameter("not valid JSON: nested too deeply", param_hint="--data") from None
    return {"type": "npz", "path": text}


def format_confusion(matrix: list[list[int]]) -> str:
    """The confusion matrix with class numbers on both axes (rows: true, columns: predicted)."""
    width = max(len(str(max(map(max, matrix)))), len(str(len(matrix) - 1)), 3)
    head = "true\\pred " + " ".join(str(c).rjust(width) for c in range(len(matrix)))
    rows = [f"{c:>9} " + " ".join(str(v).rjust(width) for v in row) for c, row in enumerate(matrix)]
    return "\n".join([head, *rows])
