"""The loss and accuracy curves of a run as a PNG (needs matplotlib: ``pip install 'cnnrun[plot]'``)."""

from __future__ import annotations

from .files import atomic_write

PLOT_HINT = "curves.png was not written: install matplotlib (pip install 'cnnrun[plot]') to get the plot"


def write_curves(metrics: list[dict], path) -> bool:
    """Draw train/validation loss and accuracy per epoch into ``path`` (atomically; a file that cannot
    be written is a :class:`~cnnrun.engine.files.WriteError`); False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = [m["epoch"] for m in metrics]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "accuracy")):
        ax.plot(epochs, [m[f"train_{key}"] for m in metrics], marker="o", label="train")
        if any(m.get(f"val_{key}") is not None for m in metrics):
            ax.plot(epochs, [m[f"val_{key}"] for m in metrics], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return True
