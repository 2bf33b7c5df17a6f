"""What several commands share: the NET argument, the --device and --checkpoint options, the plugin
registry, error handling."""

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


checkpoint_option = click.option("--checkpoint", required=True, type=click.Path(exists=True),
                                 help="A checkpoint file, or a run folder (its latest.npz).")
inference_checkpoint_option = click.option(
    "--checkpoint", required=True, type=click.Path(exists=True),
    help="A checkpoint file, or a run folder (its best.npz; latest.npz while it has none).")


class DeviceChoice(click.ParamType):
    """A registered device's name (``cnnrun_register_devices``): the choices are read from the plugins
    when an option of this type is parsed or its help is shown, not when cnnrun starts."""

    name = "device"

    def choices(self, ctx: click.Context | None) -> list[str]:
        if ctx is None:
            from cnnrun.engine.plugins import default_registries
            return default_registries().devices.names()
        return load_plugins(ctx)[1].devices.names()

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{'|'.join(self.choices(ctx))}]"

    def convert(self, value, param, ctx):
        choices = self.choices(ctx)
        if value not in choices:
            self.fail(f"{value!r} is not one of {', '.join(map(repr, choices))}.", param, ctx)
        return value

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem
        return [CompletionItem(name) for name in self.choices(ctx) if name.startswith(incomplete)]


def device_option(help_text: str):
    """``--device NAME`` (default cpu; the registered devices), with ``help_text`` saying what runs there."""
    return click.option("--device", type=DeviceChoice(), default="cpu", show_default=True,
                        help=f"{help_text} cuda needs an NVIDIA GPU and `pip install 'cnnrun[cuda]'`.")


def load_plugins(ctx: click.Context):
    """``(plugin_manager, registries)``, loaded once per command line; a plugin that fails to load is
    one warning line on stderr."""
    from cnnrun.engine.plugins import Registries, make_plugin_manager

    root = ctx.find_root()
    cached = getattr(root, "_cnnrun_plugins", None)
    if cached is not None:
        return cached
    strict = bool((root.obj or {}).get("strict_plugins"))
    with user_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = make_plugin_manager(strict=strict)
        registries = Registries.from_plugin_manager(pm)
    for warning in caught:
        click.echo(f"Warning: {warning.message}", err=True)
    root._cnnrun_plugins = pm, registries
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
