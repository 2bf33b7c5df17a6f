"""``cnnrun plugins``: the installed plugins, their versions and the layer types each provides."""

from __future__ import annotations

import json

import click

from .common import format_option, load_plugins


@click.command()
@format_option
@click.pass_context
def plugins(ctx: click.Context, output_format: str) -> None:
    """List the plugins (built-in and installed), their versions and their layer types."""
    from cnnrun.engine.plugins import plugin_infos

    pm, registries = load_plugins(ctx)
    infos = plugin_infos(pm, registries.layers)
    if output_format == "json":
        report = {"plugins": [{"name": i.name, "version": i.version, "layer_types": i.layer_types}
                              for i in infos],
                  "failed": [{"name": f.name, "error": f.error} for f in pm.failures]}
        click.echo(json.dumps(report, indent=2))
        return
    width = max(len(i.name) for i in infos)
    for info in infos:
        types = ", ".join(info.layer_types) or "(no layer types)"
        click.echo(f"{info.name.ljust(width)}  {info.version or '-':<8}  {types}")
    for failure in pm.failures:
        click.echo(f"{failure.name.ljust(width)}  FAILED    {failure.error}")
