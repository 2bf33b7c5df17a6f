"""``cnnrun plugins``: the installed plugins, their versions and the layer types each provides."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from .common import format_option, load_plugins


@click.command(short_help="List plugins, versions and what each provides.")
@format_option
@click.pass_context
def plugins(ctx: click.Context, output_format: str) -> None:
    """List the plugins (built-in and installed), their versions and their layer types."""
    from cnnrun.engine.plugins import plugin_infos

    pm, registries = load_plugins(ctx)
    infos = plugin_infos(pm, registries)
    failures = pm.failures + registries.failures  # failed to import; registered something wrong
    if output_format == "json":
        report = {"plugins": [asdict(i) for i in infos], "failed": [asdict(f) for f in failures]}
        click.echo(json.dumps(report, indent=2))
        return
    width = max(len(name) for name in [i.name for i in infos] + [f.name for f in failures])
    for info in infos:
        click.echo(f"{info.name.ljust(width)}  {info.version or '-':<8}  {provides(info)}")
    for failure in failures:
        click.echo(f"{failure.name.ljust(width)}  FAILED    {failure.error}")


def provides(info) -> str:
    """``layer types: a, b; optimizers: c`` (only the kinds the plugin provides)."""
    kinds = (("layer types", info.layer_types), ("data sources", info.data_sources),
             ("optimizers", info.optimizers), ("devices", info.devices), ("losses", info.losses),
             ("metrics", info.metrics))
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in kinds if names) or "(nothing registered)"
