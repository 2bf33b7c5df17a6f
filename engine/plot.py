"""The loss, accuracy and learning-rate curves of a run as a PNG (needs matplotlib:
``pip install 'cnnrun[plot]'``)."""

from __future__ import annotations

from .early_stopping import score
from .files import atomic_write

PLOT_HINT = "curves.png was not written: install matplotlib (pip install 'cnnrun[plot]') to get the plot"


def write_curves(metrics: list[dict], path, monitor: str = "val_accuracy") -> bool:
    """Draw :func:`curves_figure` into ``path``, marking the best epoch by ``monitor`` (atomically; a file that cannot be written is a
    :class:`~cnnrun.engine.files.WriteError`); False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig = curves_figure(metrics, monitor)
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return True


def curves_figure(metrics: list[dict], monitor: str = "val_accuracy"):
    """Three panels over whole-number epochs: train/validation loss (log scale), accuracy and the
    learning rate, each with the epoch that best.npz holds marked by a dashed line."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in metrics]
    best = max(metrics, key=lambda record: score(record, monitor))["epoch"]
    fig, (loss_ax, acc_ax, lr_ax) = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.plot(epochs, [m[f"train_{key}"] for m in metrics], marker="o", label="train")
        if any(m.get(f"val_{key}") is not None for m in metrics):
            ax.plot(epochs, [m[f"val_{key}"] for m in metrics], marker="o", label="validation")
        ax.set_title(key)
    loss_ax.set_yscale("log")
    lr_ax.plot(epochs, [m["lr"] for m in metrics], marker="o", color="tab:green", label="learning rate")
    lr_ax.set_title("learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    for ax in (loss_ax, acc_ax, lr_ax):
        ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig
