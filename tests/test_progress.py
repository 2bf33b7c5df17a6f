"""The progress bar and the per-epoch summary line."""

import io
import re

from cnnrun.engine.progress import TextReporter, summary_line

RECORD = {"epoch": 3, "train_loss": 0.42113, "train_accuracy": 0.87123, "val_loss": 0.5, "val_accuracy": 0.8,
          "lr": 0.05, "seconds": 1.94, "samples_per_second": 700.0}


def test_summary_line():
    assert summary_line(RECORD, 20) == ("epoch  3/20  train loss 0.4211 acc 0.8712  val loss 0.5000 acc 0.8000"
                                        "  lr 0.05  1.9s")
    assert "val" not in summary_line({**RECORD, "val_loss": None, "val_accuracy": None}, 5)


def test_bar_shows_batches_rate_loss_and_eta_then_the_summary():
    out = io.StringIO()
    reporter = TextReporter(out, bar=True, refresh=0)
    reporter.epoch_start(3, 20, 4)
    for batch in range(1, 5):
        reporter.batch_end(batch, batch * 32, 1.0 / batch)
    reporter.epoch_end(RECORD)
    frames = out.getvalue().split("\r")
    assert frames[1].startswith("epoch 3/20 [") and " 1/4  loss 1.0000" in frames[1]
    assert "ETA" not in frames[1] and "samples/s" not in frames[1]  # the first batch may be compiling
    assert re.search(r" 2/4  [\d,]+ samples/s  loss 0.5000  ETA 0:\d\d", frames[2])
    assert "[========================] 4/4" in frames[4]
    assert out.getvalue().endswith(summary_line(RECORD, 20) + "\n")


def test_without_a_terminal_only_summary_lines():
    out = io.StringIO()  # not a TTY
    reporter = TextReporter(out)
    reporter.epoch_start(1, 2, 3)
    for batch in range(1, 4):
        reporter.batch_end(batch, batch * 10, 1.0)
    reporter.epoch_end({**RECORD, "epoch": 1})
    assert out.getvalue() == summary_line({**RECORD, "epoch": 1}, 2) + "\n"
