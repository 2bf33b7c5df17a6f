"""The built-in data sources: the bundled UCI digits, .npz files and IDX (MNIST) files (:mod:`.datasets`)."""

from .datasets import cnnrun_register_data_sources

__all__ = ["cnnrun_register_data_sources"]
