"""``cnnrun describe``: one row per layer with its inputs, output shape, parameters and MACs."""

from __future__ import annotations

import json

import click

from .common import device_option, format_option, load_network, net_argument, user_errors

BYTES_PER_VALUE = 4  # float32


@click.command(short_help="Show each layer's shape, inputs, parameters and MACs.")
@net_argument
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size used for the activation-memory total.")
@device_option("Check that every layer runs on this device and that the device is there.")
@format_option
@click.pass_context
def describe(ctx: click.Context, net: str, batch_size: int, device: str, output_format: str) -> None:
    """Show each layer's inputs, output shape, parameters and MACs (multiply-accumulates per
    sample), with totals (trainable and non-trainable values) and the activation memory of one batch."""
    network = load_network(ctx, net)
    with user_errors():
        network.to(device)
    report = describe_network(network, batch_size)
    if output_format == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_table(report))


def describe_network(network, batch_size: int) -> dict:
    """The JSON report of ``cnnrun describe`` (documented in docs/format.md)."""
    rows = network.summary()
    values = int(_prod(network.input_shape)) + sum(int(_prod(r["output_shape"])) for r in rows)
    return {
        "name": network.name,
        "input_shape": list(network.input_shape),
        "batch_size": batch_size,
        "layers": rows,
        "total_params": sum(r["params"] for r in rows),
        "trainable_params": sum(r["params"] for r in rows if r["trainable"]),
        "non_trainable_params": sum(r["non_trainable_params"] + (0 if r["trainable"] else r["params"]) for r in rows),
        "total_macs": sum(r["macs"] for r in rows),
        "activation_bytes": values * batch_size * BYTES_PER_VALUE,
    }


def format_table(report: dict) -> str:
    """``report`` as an aligned text table with totals; the layers of each block instance come
    under a line ``[INSTANCE: block BLOCK]``."""
    header = ("name", "type", "inputs", "output shape", "params", "non-trainable", "MACs")
    body = [(r["name"], r["type"], ", ".join(r["inputs"]), "(" + ", ".join(map(str, r["output_shape"])) + ")",
             f"{r['params']:,}", f"{r['non_trainable_params']:,}", f"{r['macs']:,}") for r in report["layers"]]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(row):
        left = [row[i].ljust(widths[i]) for i in range(4)]
        right = [row[i].rjust(widths[i]) for i in range(4, 7)]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(line(header))
    shape = ", ".join(map(str, report["input_shape"]))
    out = [f"{report['name']}: input ({shape})", rule, line(header), rule]
    instance = None
    for row, cells in zip(report["layers"], body):
        if row.get("instance") and row["instance"] != instance:  # a header line per block instance
            out.append(f"[{row['instance']}: block {row['block']}]")
        instance = row.get("instance")
        out.append(line(cells))
    out.append(rule)
    frozen = ", frozen layers' parameters" if report["trainable_params"] < report["total_params"] else ""
    out.append(f"total parameters: {report['trainable_params']:,} trainable, {report['non_trainable_params']:,} "
               f"non-trainable (buffers such as batchnorm's running statistics{frozen})")
    out.append(f"total MACs per sample: {report['total_macs']:,}")
    mib = report["activation_bytes"] / 2**20
    out.append(f"activation memory for a batch of {report['batch_size']} (float32): {mib:,.2f} MiB")
    return "\n".join(out)


def _prod(shape) -> int:
    result = 1
    for s in shape:
        result *= int(s)
    return result
