"""Placeholder while this layer family is written."""
from cnnrun.engine import hookimpl


@hookimpl
def cnnrun_register_layers(register):
    pass
