"""``cnnrun profile``: per-layer forward and backward times, GFLOP/s and memory (like ``caffe time``)."""

from __future__ import annotations

import json

import click

from .common import device_option, format_option, load_network, net_argument, user_errors


@click.command(short_help="Time each layer's forward and backward pass.")
@net_argument
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=64, show_default=True,
              help="Samples per timed batch.")
@click.option("--iterations", "-n", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed forward + backward passes (after one untimed warm-up pass).")
@device_option("Where to run the network.")
@format_option
@click.pass_context
def profile(ctx: click.Context, net: str, batch_size: int, iterations: int, device: str, output_format: str) -> None:
    """Time each layer's forward and backward pass on a random batch in training mode: the median
    over the iterations, its share of the total, MACs and achieved GFLOP/s, then totals, samples/s
    and peak memory. The warm-up pass before the timed ones shows the JIT compile time."""
    from cnnrun.engine.memory import check_batch_fits
    from cnnrun.engine.profile import profile_network

    network = load_network(ctx, net)
    with user_errors():
        network.to(device)
        check_batch_fits(network, batch_size, "profile")
        report = profile_network(network, batch_size, iterations)
    if output_format == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_profile(report))


def format_profile(report: dict) -> str:
    """``report`` as an aligned table: one row per layer, then the totals and memory."""
    header = ("name", "type", "forward ms", "backward ms", "share", "MACs/batch", "fwd GFLOP/s", "f+b GFLOP/s")
    total = report["total"]
    body = [_row(r["name"], r["type"], r["forward_ms"], r["backward_ms"], r["share"], r["macs"], r["gflops"])
            for r in report["layers"]]
    totals = _row("total", "", total["forward_ms"], total["backward_ms"], 1.0, total["macs"], total["gflops"])
    widths = [max(len(row[i]) for row in [header, *body, totals]) for i in range(len(header))]

    def line(row):
        return "  ".join([row[i].ljust(widths[i]) for i in range(2)]
                         + [row[i].rjust(widths[i]) for i in range(2, len(row))]).rstrip()

    rule = "-" * len(line(header))
    memory = report["peak_memory"]
    rss = memory["process_rss_bytes"]
    return "\n".join([
        f"{report['network']} on {report['device']}: batch {report['batch_size']}, "
        f"{report['iterations']} timed iterations, median times",
        f"warm-up (JIT compile, cache load): {report['warmup_seconds']:.2f} s",
        rule, line(header), rule, *map(line, body), rule, line(totals), rule,
        f"forward + backward: {total['forward_backward_ms']:.2f} ms per batch, "
        f"{report['samples_per_second']:,.0f} samples/s "
        f"(layers alone: {total['layers_forward_ms']:.2f} + {total['layers_backward_ms']:.2f} ms)",
        f"peak memory allocated by NumPy/Python during one pass (tracemalloc): {_mib(memory['traced_bytes'])}",
        f"peak resident memory of the whole process (getrusage): {_mib(rss) if rss is not None else 'n/a'}",
    ])


def _row(name, type_name, forward_ms, backward_ms, share, macs, gflops) -> tuple[str, ...]:
    return (name, type_name, f"{forward_ms:.3f}", f"{backward_ms:.3f}", f"{100 * share:.1f}%", f"{macs:,}",
            _rate(gflops["forward"]), _rate(gflops["forward_backward"]))


def _rate(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB"
