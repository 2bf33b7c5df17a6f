"""What several commands share: the NET argument, the plugin registry, error handling."""

from __future__ import annotations

import contextlib
import warnings

import click

net_argument = click.argument("net", metavar="NET.json",
                              type=click.Path(exists=True, dir_okay=False, readable=True))


def format_option(function):
    """``--format table|json``."""
    return click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table",
                        show_default=True, help="Print a table for people or JSON for programs.")(function)


def device_option(help_text: str):
    """``--device cpu|cuda`` (default cpu), with ``help_text`` saying what runs there."""
    return click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                        help=f"{help_text} cuda needs an NVIDIA GPU and `pip install 'cnnrun[cuda]'`.")


def load_plugins(ctx: click.Context):
    """``(plugin_manager, registries)``; a plugin that fails to load is one warning line on stderr."""
    from cnnrun.engine.plugins import Registries, make_plugin_manager

    strict = bool((ctx.find_root().obj or {}).get("strict_plugins"))
    with user_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = make_plugin_manager(strict=strict)
        registries = Registries.from_plugin_manager(pm)
    for warning in caught:
        click.echo(f"Warning: {warning.message}", err=True)
    return pm, registries


@contextlib.contextmanager
def user_errors():
    """Turn cnnrun's own errors into one clean ``Error: ...`` line and exit status 1."""
    from cnnrun.engine import CnnrunError

    try:
        yield
    except CnnrunError as err:
        raise click.ClickException(str(err)) from None


def load_network(ctx: click.Context, path: str):
    """The network described by the JSON file at ``path``, built with every installed plugin."""
    from cnnrun.engine import Network

    _, registries = load_plugins(ctx)
    with user_errors():
        return Network.from_json(path, registry=registries.layers)
