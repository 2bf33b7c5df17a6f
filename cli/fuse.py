"""``cnnrun fuse``: fold batchnorm layers into the conv/linear layers before them, for inference."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import checkpoint_option, load_plugins, net_argument, user_errors


@click.command(short_help="Fold batchnorm layers into the layers before them.")
@net_argument
@checkpoint_option
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the fused NAME.json and NAME.npz (created if missing).")
@click.pass_context
def fuse(ctx: click.Context, net: str, checkpoint: str, out_dir: str) -> None:
    """Fold every layer that can be folded into the layer before it (a batchnorm directly after a
    conv2d, conv1d or linear layer) into that layer (evaluation mode: the outputs stay the same),
    and write the smaller network and its checkpoint."""
    from cnnrun.engine import Network
    from cnnrun.engine.checkpoint import load_checkpoint, save_checkpoint
    from cnnrun.engine.fuse import fuse_network
    from cnnrun.engine.run_folder import resolve_checkpoint

    _, registries = load_plugins(ctx)
    with user_errors():
        network = Network.from_json(net, registry=registries.layers)
        source = resolve_checkpoint(checkpoint)
        config, fused, pairs = fuse_network(network.config, load_checkpoint(source), registries.layers,
                                            str(source))
    out = Path(out_dir)
    json_path, checkpoint_path = out / f"{network.name}.json", out / f"{network.name}.npz"
    for target, original in ((json_path, Path(net)), (checkpoint_path, source)):
        if target.resolve() == original.resolve():
            raise click.ClickException(f"{target} would overwrite the file it is made from; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        json_path.write_text(config_text(config), encoding="utf-8")
        save_checkpoint(checkpoint_path, fused)
    except OSError as exc:
        raise click.ClickException(f"cannot write to {out}: {exc.strerror or exc}") from None
    for layer, bn in pairs:
        click.echo(f"folded {bn} into {layer}")
    if not pairs:
        click.echo("no batchnorm directly follows a conv2d, conv1d or linear layer: nothing folded")
    after = sum(a.size for named in fused.params.values() for a in named.values())
    click.echo(f"parameters: {network.parameter_count():,} -> {after:,}")
    click.echo(f"wrote {json_path} and {checkpoint_path}")


def config_text(config: dict) -> str:
    """The network as JSON written like the examples: one layer, or one train key, per line."""
    def block(key, lines, opening, closing):
        return f"  {json.dumps(key)}: {opening}\n" + ",\n".join(f"    {line}" for line in lines) + f"\n  {closing}"

    parts = []
    for key, value in config.items():
        if key == "layers":
            parts.append(block(key, map(json.dumps, value), "[", "]"))
        elif isinstance(value, dict) and len(json.dumps(value)) > 80:
            parts.append(block(key, (f"{json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()), "{", "}"))
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"
