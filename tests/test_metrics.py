"""Metrics: the built-ins against written-out references, batch by batch; a metric registered by a
plugin used from JSON and from fit; plain functions; errors."""

import copy
import json

import numpy as np
import pytest

from cnnrun.engine import ConfigError, Network, hookimpl, make_plugin_manager
from cnnrun.engine.metrics import Metric, make_metrics
from cnnrun.engine.plugins import Registries
from cnnrun.engine.run_folder import read_metrics
from cnnrun.engine.train import train
from helpers import without_timing


def reference_scores(outputs, labels):
    """Macro precision, recall, F1 and the confusion matrix by sklearn's definitions, with loops."""
    classes = outputs.shape[1]
    predicted = [max(range(classes), key=lambda c: row[c]) for row in outputs]
    confusion = [[0] * classes for _ in range(classes)]
    for true, guess in zip(labels, predicted):
        confusion[true][guess] += 1
    precision, recall, f1 = [], [], []
    for c in sorted(set(labels) | set(predicted)):
        tp = sum(1 for t, p in zip(labels, predicted) if t == c and p == c)
        guessed = sum(1 for p in predicted if p == c)
        actual = sum(1 for t in labels if t == c)
        p = tp / guessed if guessed else 0.0
        r = tp / actual if actual else 0.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    mean = lambda values: sum(values) / len(values)
    return {"precision": mean(precision), "recall": mean(recall), "f1": mean(f1), "confusion_matrix": confusion}


def reference_top_k(outputs, labels, k):
    return sum(1 for row, y in zip(outputs, labels) if y in np.argsort(-row)[:k]) / len(labels)


@pytest.mark.parametrize("trial", range(6))
def test_builtin_metrics_match_references_over_batches(registries, trial):
    rng = np.random.default_rng(trial)
    classes, n = int(rng.integers(2, 7)), int(rng.integers(5, 60))
    outputs = rng.normal(size=(n, classes))
    labels = rng.integers(0, classes - (trial % 2), n)  # sometimes a class that never occurs
    k = int(rng.integers(1, classes + 2))
    metrics = make_metrics(["precision", "recall", "f1", "confusion_matrix", {"type": "top_k_accuracy", "k": k}],
                           registries.metrics)
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(3, n - 1), replace=False))
    for metric in metrics:
        for part_outputs, part_labels in zip(np.split(outputs, cuts), np.split(labels, cuts)):
            metric.update(part_outputs, part_labels)
    got = {m.name: m.result() for m in metrics}
    expected = reference_scores(outputs, labels)
    for name in ("precision", "recall", "f1"):
        assert got[name] == pytest.approx(expected[name], rel=1e-12), name
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    assert got[f"top_{k}_accuracy"] == pytest.approx(reference_top_k(outputs, labels, k))


class Margin(Metric):
    """A test plugin's metric: the mean of (output of the true class - the highest other output)."""

    type_name = "margin"

    def reset(self):
        self.total, self.count = 0.0, 0

    def update(self, outputs, labels):
        rows = np.arange(len(labels))
        true = outputs[rows, labels]
        others = outputs.copy()
        others[rows, labels] = -np.inf
        self.total += float(np.sum(true - others.max(axis=1)))
        self.count += len(labels)

    def result(self):
        return self.total / self.count


class MarginPlugin:
    @staticmethod
    @hookimpl
    def cnnrun_register_metrics(register):
        register(Margin)


@pytest.fixture(scope="module")
def with_margin():
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(MarginPlugin, name="test-margin")
    return Registries.from_plugin_manager(pm)


NET = {"name": "linear", "input": {"shape": [1, 8, 8]},
       "layers": [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 10}],
       "train": {"optimizer": {"type": "sgd", "lr": 0.1}, "epochs": 2, "batch_size": 200, "seed": 4,
                 "metrics": ["margin", {"type": "top_k_accuracy", "k": 3}]}}


def test_a_plugin_metric_from_json_and_from_fit(with_margin, tmp_path):
    run = train(copy.deepcopy(NET), out=tmp_path / "run", registries=with_margin)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert {"train_margin", "val_margin", "train_top_3_accuracy", "val_top_3_accuracy"} <= set(records[0])
    assert records[1]["val_margin"] > records[0]["val_margin"]  # training widens the margin
    net = Network.from_config(NET, registry=with_margin.layers, seed=4)
    history = net.fit(data={"type": "digits"}, metrics=["margin", {"type": "top_k_accuracy", "k": 3}],
                      registries=with_margin)
    assert without_timing(history.records) == without_timing(run.metrics)
    assert with_margin.metrics.provenance("margin")["plugin"] == "test-margin"


def test_plain_functions_are_averaged_over_the_batches(with_margin, registries):
    def share_of_positive_outputs(outputs, labels):
        return float(np.mean(outputs > 0))

    net = Network.from_config(NET, registry=registries.layers)
    history = net.fit(data={"type": "digits"}, epochs=1, metrics=[share_of_positive_outputs], registries=registries)
    value = history.records[0]["val_share_of_positive_outputs"]
    validation = json.loads(json.dumps(history.records[0]))  # records are JSON
    assert 0 < value < 1 and validation["val_share_of_positive_outputs"] == value


@pytest.mark.parametrize("metrics, message", [
    (["f2"], r"train.metrics: metrics\[0\]: unknown metric \"f2\"; known: loss, accuracy, top_k_accuracy, "
             r"precision, recall, f1, confusion_matrix"),
    ([{"type": "recal"}], r"unknown metric \"recal\" \(did you mean 'recall'\?\)"),
    (["f1", {"type": "f1"}], r"train.metrics: metrics\[1\]: a metric named 'f1' is listed already"),
    ([{"type": "top_k_accuracy", "k": 0}], r"train.metrics: k must be >= 1; got k=0"),
    ([{"type": "recall", "average": "micro"}], r"train.metrics: unknown key 'average'; recall accepts: none"),
    ([3], r"train.metrics: metrics\[0\] must be a metric name, an object with a \"type\""),
    ("f1", r"train: metrics must be a list of metric names or objects; got metrics=\"f1\""),
])
def test_bad_metrics_are_one_clear_error(registries, tmp_path, metrics, message):
    config = copy.deepcopy(NET)
    config["train"]["metrics"] = metrics
    with pytest.raises(ConfigError, match=message):
        train(config, out=tmp_path / "run", registries=registries)


def test_accuracy_and_loss_are_always_measured(registries):
    assert make_metrics(["accuracy", "loss", "f1"], registries.metrics)[0].name == "f1"


def test_cnnrun_plugins_lists_the_metrics():
    from click.testing import CliRunner

    from cnnrun.cli.main import cli

    result = CliRunner().invoke(cli, ["plugins"])
    assert "metrics: confusion_matrix, f1, precision, recall, top_k_accuracy" in result.output
