"""Finds cnnrun's packages: the repository root is the package ``cnnrun`` (pyproject.toml maps it),
and every package under engine/, plugins/ and cli/ installs as ``cnnrun.<package>``."""

from setuptools import find_packages, setup

setup(packages=["cnnrun"] + [f"cnnrun.{name}" for name in find_packages(include=["engine*", "plugins*", "cli*"])])
