"""``python -m cnnrun.cli``: the same as the ``cnnrun`` command."""

from .main import cli

cli(prog_name="cnnrun")
