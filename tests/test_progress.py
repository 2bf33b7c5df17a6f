"""The progress bar, the per-epoch summary line, the compile notice and the data-wait share."""

import io
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numba
import pytest

from cnnrun.engine import progress
from cnnrun.engine.progress import COMPILING, Reporter, TextReporter, summary_line

RECORD = {"epoch": 3, "train_loss": 0.42113, "train_accuracy": 0.87123, "val_loss": 0.5, "val_accuracy": 0.8,
          "lr": 0.05, "seconds": 1.94, "samples_per_second": 700.0}


@pytest.fixture
def columns(monkeypatch):
    """Set the terminal width the reporter sees."""
    def set_width(width):
        monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((width, 24)))
    set_width(80)
    return set_width


def frames(text):
    return [f.replace("\033[K", "") for f in text.split("\r") if f.replace("\033[K", "")]


def run_epoch(reporter, epoch, epochs, batches, record=RECORD):
    reporter.epoch_start(epoch, epochs, batches)
    for batch in range(1, batches + 1):
        reporter.batch_end(batch, batch * 32, 1.0 / batch)
    reporter.epoch_end({**record, "epoch": epoch})


def test_summary_line():
    assert summary_line(RECORD, 20) == ("epoch  3/20  train loss 0.4211 acc 0.8712  val loss 0.5000 acc 0.8000"
                                        "  lr 5.00e-02    1.9s")
    assert "val" not in summary_line({**RECORD, "val_loss": None, "val_accuracy": None}, 5)
    assert summary_line({**RECORD, "data_wait_seconds": 0.097}, 20).endswith("  1.9s  data wait   5%")


def test_summary_fields_line_up():
    lines = [summary_line({**RECORD, "epoch": epoch, "lr": lr, "seconds": seconds, "data_wait_seconds": wait}, 20)
             for epoch, lr, seconds, wait in ((1, 0.05, 1.94, 0.5), (20, 0.0003078, 123.4, 0.0),
                                                   (9, 1.0, 0.05, 0.05))]
    assert len({len(line) for line in lines}) == 1
    for field in ("train loss", "val loss", " lr ", "s  data wait"):
        assert len({line.index(field) for line in lines}) == 1, field


def test_bar_shows_batches_rate_loss_and_etas_then_the_summary(columns):
    out = io.StringIO()
    reporter = TextReporter(out, bar=True, refresh=0)
    reporter.epoch_start(3, 20, 4)
    for batch in range(1, 5):
        reporter.batch_end(batch, batch * 32, 1.0 / batch)
    reporter.epoch_end({**RECORD, "data_wait_seconds": 0.194})
    shown = frames(out.getvalue())
    assert shown[0].startswith("epoch  3/20 [") and " 1/4  loss 1.0000" in shown[0]
    assert "ETA" not in shown[0] and "samples/s" not in shown[0]  # the first batch may be compiling
    assert re.search(r" 2/4 +[\d,]+/s  loss 0.5000  ETA 0:\d\d  run \d+:\d\d", shown[1])  # 80 columns: "/s"
    assert re.search(r"\[=+\] 4/4", shown[3])
    assert out.getvalue().endswith(summary_line({**RECORD, "data_wait_seconds": 0.194}, 20) + "\n")
    assert "data wait  10%" in shown[-1]


@pytest.mark.parametrize("width", [40, 60, 80, 132])
def test_the_bar_fits_the_terminal(columns, width, monkeypatch):
    columns(width)
    ticks = iter(range(10**6))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(ticks) / 100)  # 3,200 samples/s
    out = io.StringIO()
    run_epoch(TextReporter(out, bar=True, refresh=0), 7, 20, 500)
    bars = [f for f in frames(out.getvalue()) if f.startswith("epoch  7/20 [")]
    assert len(bars) == 500 and all(len(f) <= width - 1 for f in bars)
    if width >= 80:
        assert all(re.search(r"\d( samples)?/s  loss .*  run ", f) for f in bars[1:])
        assert all(len(f) == width - 1 for f in bars[1:])  # the bar takes the room that is left
    assert all((" samples/s " in f) == (width > 80) for f in bars[1:])


def test_the_run_eta_counts_the_epochs_left(columns, monkeypatch):
    clock = iter(range(1000))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    out = io.StringIO()
    reporter = TextReporter(out, bar=True, refresh=0)
    run_epoch(reporter, 1, 3, 5)  # 1 s a batch: the epoch's ETA 0:03 after batch 2, then 2 epochs of 0:05
    assert "ETA 0:03  run 0:13" in frames(out.getvalue())[1]
    run_epoch(reporter, 2, 3, 5)  # now the measured epoch (6 ticks, start to end) is the estimate
    epoch2 = [f for f in frames(out.getvalue()) if f.startswith("epoch 2/3") and "ETA" in f]
    assert "ETA 0:03  run 0:09" in epoch2[0]
    run_epoch(reporter, 3, 3, 5)
    assert all("run" not in f for f in frames(out.getvalue()) if f.startswith("epoch 3/3"))


def test_without_a_terminal_one_line_an_epoch_and_no_carriage_returns():
    out = io.StringIO()  # not a TTY
    reporter = TextReporter(out)
    for epoch in (1, 2):
        run_epoch(reporter, epoch, 2, 3)
    assert out.getvalue() == "".join(summary_line({**RECORD, "epoch": e}, 2) + "\n" for e in (1, 2))
    assert "\r" not in out.getvalue() and "\033" not in out.getvalue()


def test_a_compile_during_an_epoch_is_announced_once(columns):
    out = io.StringIO()
    reporter = TextReporter(out)
    reporter.epoch_start(1, 2, 1)
    fresh = numba.njit(lambda x: x + 1)  # not cached: it compiles on this call
    assert fresh(1) == 2
    numba.njit(lambda x: x * 3)(2)
    reporter.batch_end(1, 1, 0.5)
    reporter.epoch_end(RECORD)
    assert out.getvalue() == COMPILING + "\n" + summary_line(RECORD, 2) + "\n"
    numba.njit(lambda x: x - 1)(1)  # after the epoch: not listened to
    assert out.getvalue().count(COMPILING) == 1
    bar = io.StringIO()
    reporter = TextReporter(bar, bar=True)
    reporter.epoch_start(1, 2, 1)
    numba.njit(lambda x: x + 2)(1)
    assert bar.getvalue() == "\r" + COMPILING[:79] + "\033[K"


COLD_OR_WARM = """
import io, sys
sys.path.insert(0, {folder!r})
from cnnrun.engine.progress import TextReporter
import kernel
out = io.StringIO()
reporter = TextReporter(out)
reporter.epoch_start(1, 1, 1)
kernel.add_one(1.0)
print("compiling" in out.getvalue())
"""


def test_the_notice_shows_on_a_cold_cache_only(tmp_path):
    (tmp_path / "kernel.py").write_text(textwrap.dedent("""
        import numba
        @numba.njit(cache=True)
        def add_one(x):
            return x + 1
    """))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    script = COLD_OR_WARM.format(folder=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
            for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["True", "False"]


def test_the_quiet_reporter_shows_nothing():
    reporter = Reporter()
    reporter.epoch_start(1, 1, 1)
    reporter.batch_end(1, 1, 0.1)
    reporter.epoch_end(RECORD)


def test_training_tells_the_reporter_how_long_it_waited_for_data(tmp_path):
    from cnnrun.engine.plugins import Registries, make_plugin_manager
    from cnnrun.engine.train import train

    class Records(Reporter):
        def __init__(self):
            self.records = []

        def epoch_end(self, metrics):
            self.records.append(metrics)

    reporter = Records()
    net = {"name": "tiny", "input": {"shape": [1, 8, 8]},
           "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 10}],
           "train": {"data": {"type": "digits"}, "epochs": 2, "batch_size": 600,
                     "optimizer": {"type": "sgd", "lr": 0.1}}}
    registries = Registries.from_plugin_manager(make_plugin_manager(load_entrypoints=False))
    result = train(net, out=tmp_path / "run", reporter=reporter, registries=registries)
    assert len(reporter.records) == 2
    for shown, saved in zip(reporter.records, result.metrics):
        assert 0 <= shown.pop("data_wait_seconds") <= saved["seconds"]
        assert shown == saved  # and metrics.jsonl stays as it was
