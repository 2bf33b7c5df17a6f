"""The ``train`` section of a network file: its keys, their defaults, and overrides (``--set``)."""

from __future__ import annotations

import copy

from .augment import make_augmenter
from .early_stopping import check_early_stopping
from .errors import ConfigError, did_you_mean
from .options import bool_option, float_option, int_option, show
from .schedules import check_schedule

TRAIN_DEFAULTS = {
    "data": {"type": "digits"},
    "validation_split": 0.2,
    "loss": "cross_entropy",
    "optimizer": {"type": "sgd", "lr": 0.01},
    "schedule": {"type": "constant"},
    "epochs": 10,
    "batch_size": 64,
    "seed": 0,
    "drop_last": False,
    "augment": [],
    "early_stopping": None,
    "init": None,
    "metrics": [],
}


def resolve_train_config(section: dict | None, overrides: dict | None = None) -> dict:
    """The ``train`` section with defaults filled in and ``overrides`` applied, checked.

    ``overrides`` maps dotted keys to values: ``{"epochs": 8, "optimizer.lr": 0.1}``.
    """
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"the train section must be a JSON object; got {show(section)[:60]}", section="train")
    config = copy.deepcopy(TRAIN_DEFAULTS)
    for key, value in (section or {}).items():
        if key not in TRAIN_DEFAULTS:
            raise ConfigError(f"unknown key '{key}'{did_you_mean(key, TRAIN_DEFAULTS)}; train accepts: "
                              f"{', '.join(TRAIN_DEFAULTS)}", section="train", key=key)
        config[key] = copy.deepcopy(value)
    for dotted, value in (overrides or {}).items():
        _set_dotted(config, dotted, value)
    for key in ("data", "optimizer", "schedule"):
        if not isinstance(config[key], dict):
            raise ConfigError(f"{key} must be a JSON object; got {key}={show(config[key])}", section="train", key=key)
    try:
        config["validation_split"] = float_option(config["validation_split"], "validation_split", low=0.0,
                                                  high=1.0, high_open=True)
        config["epochs"] = int_option(config["epochs"], "epochs")
        config["batch_size"] = int_option(config["batch_size"], "batch_size")
        config["seed"] = int_option(config["seed"], "seed", minimum=0)
        config["drop_last"] = bool_option(config["drop_last"], "drop_last")
        config["loss"] = _loss_option(config["loss"])
    except ConfigError as err:
        err.section = "train"
        raise
    if config["init"] is not None and not (isinstance(config["init"], str) and config["init"]):
        raise ConfigError(f"init must be the path of a checkpoint or run folder, or null; got init="
                          f"{show(config['init'])}", section="train", key="init")
    check_schedule(config["schedule"], config["epochs"])
    make_augmenter(config["augment"])
    config["early_stopping"] = check_early_stopping(config["early_stopping"])
    if not isinstance(config["metrics"], (list, tuple)):
        raise ConfigError(f"metrics must be a list of metric names or objects; got "
                          f"metrics={show(config['metrics'])[:60]}", section="train", key="metrics")
    return config


def _loss_option(value):
    """A loss name or ``{"type": NAME, options...}``, as JSON writes them (the loss registry checks the
    name and the options when training starts: :func:`~cnnrun.engine.batch_loss.make_loss`)."""
    if isinstance(value, str) or isinstance(value, dict) and isinstance(value.get("type"), str):
        return value
    raise ConfigError(f'loss must be a loss name or {{"type": NAME, options...}}; got loss={show(value)[:60]}',
                      key="loss")


def _set_dotted(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    if not last or parents[:1] and parents[0] not in ("data", "optimizer", "schedule", "loss") or \
            not parents and last not in TRAIN_DEFAULTS:
        raise ConfigError(f"cannot override '{dotted}': use a train key ({', '.join(TRAIN_DEFAULTS)}) "
                          f"or a key inside data, optimizer, schedule or loss, e.g. optimizer.lr", section="train")
    if parents[:1] == ["loss"] and isinstance(config["loss"], str):  # loss.label_smoothing on "cross_entropy"
        config["loss"] = {"type": config["loss"]}
    target = config
    for key in parents:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"cannot override '{dotted}': {key} is not an object", section="train")
    target[last] = value
