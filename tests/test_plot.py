"""curves.png: checked through the figure's objects (matplotlib's Agg backend), not its pixels."""

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.ticker import MaxNLocator  # noqa: E402

from cnnrun.engine.plot import curves_figure, write_curves  # noqa: E402

RUN = [{"epoch": e, "train_loss": 2.0 / e, "train_accuracy": 0.5 + e / 40, "val_loss": 1.5 / e + (e == 6) * 1.0,
        "val_accuracy": acc, "lr": 0.1 * (0.5 ** e), "seconds": 1.0, "samples_per_second": 10.0}
       for e, acc in zip(range(1, 7), (0.6, 0.7, 0.8, 0.85, 0.9, 0.88))]


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_panels_log_loss_integer_epochs_learning_rate_and_the_best_epoch():
    fig = curves_figure(RUN)
    loss_ax, acc_ax, lr_ax = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
    assert loss_ax.get_yscale() == "log" and acc_ax.get_yscale() == "linear"
    for ax in fig.axes:
        locator = ax.xaxis.get_major_locator()
        assert isinstance(locator, MaxNLocator) and locator._integer
        assert all(float(t).is_integer() for t in ax.get_xticks())
        best = lines_by_label(ax)["best (epoch 5)"]  # the highest validation accuracy
        assert list(best.get_xdata()) == [5, 5]
    assert list(lines_by_label(lr_ax)["learning rate"].get_ydata()) == [m["lr"] for m in RUN]
    assert list(lines_by_label(loss_ax)["validation"].get_ydata()) == [m["val_loss"] for m in RUN]
    assert list(lines_by_label(acc_ax)["train"].get_xdata()) == list(range(1, 7))


def test_without_validation_the_best_epoch_has_the_lowest_training_loss(tmp_path):
    run = [{**m, "val_loss": None, "val_accuracy": None, "train_loss": abs(m["epoch"] - 3) + 0.1} for m in RUN]
    fig = curves_figure(run)
    assert "best (epoch 3)" in lines_by_label(fig.axes[0])
    assert "validation" not in lines_by_label(fig.axes[0])
    assert write_curves(run, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
