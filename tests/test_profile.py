"""``cnnrun profile`` and :mod:`cnnrun.engine.profile`: per-layer times, shares, MACs, GFLOP/s, memory."""

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cnnrun.cli.main import cli
from cnnrun.engine import Network
from cnnrun.engine.profile import LayerTimer, gflops, profile_network

TINY = {
    "name": "tiny",
    "input": {"shape": [1, 6, 6]},
    "layers": [
        {"name": "conv", "type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1},
        {"name": "bn", "type": "batchnorm"},
        {"type": "relu"},
        {"type": "flatten"},
        {"name": "fc", "type": "linear", "out_features": 4},
        {"type": "softmax"},
    ],
}
LAYER_KEYS = {"name", "type", "forward_ms", "backward_ms", "share", "macs", "gflops"}
REPORT_KEYS = {"network", "device", "batch_size", "iterations", "warmup_seconds", "layers", "total",
               "samples_per_second", "peak_memory"}


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def run(*args):
    return CliRunner().invoke(cli, ["profile", *args], catch_exceptions=False)


def test_table_has_the_warmup_line_one_row_per_layer_and_totals(net_file):
    result = run(net_file, "-b", "4", "-n", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "tiny on cpu: batch 4, 2 timed iterations, median times"
    assert re.fullmatch(r"warm-up \(JIT compile, cache load\): \d+\.\d\d s", lines[1])
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    assert len(rules) == 4
    assert lines[rules[0] + 1].split()[:4] == ["name", "type", "forward", "ms"]
    rows = lines[rules[1] + 1:rules[2]]
    assert [row.split()[0] for row in rows] == ["conv", "bn", "relu_1", "flatten_1", "fc", "softmax_1"]
    assert [row.split()[1] for row in rows] == ["conv2d", "batchnorm", "relu", "flatten", "linear", "softmax"]
    assert lines[rules[2] + 1].split()[0] == "total" and "100.0%" in lines[rules[2] + 1]
    assert re.search(r"\d+\.\d\d ms per batch, [\d,]+ samples/s", result.output)
    assert "(tracemalloc): " in result.output and "(getrusage): " in result.output


def test_json_report(net_file):
    result = run(net_file, "--batch-size", "3", "--iterations", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == REPORT_KEYS
    assert (report["network"], report["device"], report["batch_size"], report["iterations"]) == ("tiny", "cpu", 3, 2)
    assert report["warmup_seconds"] > 0
    summary = Network.from_config(TINY).summary()
    assert [r["name"] for r in report["layers"]] == [r["name"] for r in summary]
    for row, described in zip(report["layers"], summary):
        assert set(row) == LAYER_KEYS
        assert row["macs"] == described["macs"] * 3
        assert row["forward_ms"] > 0 and row["backward_ms"] > 0
        assert set(row["gflops"]) == {"forward", "forward_backward"}
        assert (row["gflops"]["forward"] is None) == (row["macs"] == 0)
    assert sum(r["share"] for r in report["layers"]) == pytest.approx(1.0, abs=1e-9)
    total = report["total"]
    assert set(total) == {"forward_ms", "backward_ms", "forward_backward_ms", "layers_forward_ms",
                          "layers_backward_ms", "macs", "gflops"}
    assert total["macs"] == sum(r["macs"] for r in summary) * 3
    assert total["layers_forward_ms"] == pytest.approx(sum(r["forward_ms"] for r in report["layers"]))
    assert report["samples_per_second"] == pytest.approx(3 / (total["forward_backward_ms"] / 1e3))
    assert set(report["peak_memory"]) == {"traced_bytes", "process_rss_bytes"}
    assert report["peak_memory"]["traced_bytes"] > 0
    assert report["peak_memory"]["process_rss_bytes"] > 2**20


def test_batch_size_and_iterations_are_respected():
    net = Network.from_config(TINY)
    batches = []
    forward = net.forward

    def counting_forward(x, training=False, timer=None):
        batches.append((x.shape[0], training, timer is not None))
        return forward(x, training, timer)

    net.forward = counting_forward
    report = profile_network(net, batch_size=5, iterations=3)
    # one warm-up pass, 3 timed passes, one pass traced for memory
    assert batches == [(5, True, False)] + [(5, True, True)] * 3 + [(5, True, False)]
    assert (report["batch_size"], report["iterations"]) == (5, 3)


def test_timer_synchronizes_the_device_around_each_layer():
    class Backend:
        calls = 0

        def synchronize(self):
            Backend.calls += 1

    timer = LayerTimer(Backend())
    for phase in ("forward", "backward", "forward"):
        with timer("conv", phase):
            assert Backend.calls % 2 == 1  # synchronized before the clock started
    assert Backend.calls == 6
    assert len(timer.seconds["conv", "forward"]) == 2 and len(timer.seconds["conv", "backward"]) == 1
    assert timer.median_ms("conv", "forward") >= 0 and timer.median_ms("relu", "backward") == 0.0


def test_gflops_counts_two_flops_per_mac_and_backward_as_twice_forward():
    assert gflops(10**9, 1000.0, 2000.0) == {"forward": 2.0, "forward_backward": 2.0}
    assert gflops(10**9, 500.0, 500.0) == {"forward": 4.0, "forward_backward": 6.0}
    assert gflops(0, 1.0, 1.0) == {"forward": None, "forward_backward": None}
    assert gflops(10, 0.0, 0.0) == {"forward": None, "forward_backward": None}


def test_bad_network_file_is_one_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"input": {"shape": [1, 6, 6]}, "layers": [')
    result = run(str(path))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {path}: invalid JSON at line 1 column 44: "
                                                  "Expecting value"]


def test_cuda_device_is_timed_there(tmp_path, cuda_backend):
    """On the CUDA device (Numba's simulator unless NUMBA_ENABLE_CUDASIM=0) the same report comes out."""
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"name": "small", "input": {"shape": [5]},
                                "layers": [{"type": "relu"}, {"type": "softmax"}]}))
    result = run(str(path), "--device", "cuda", "-b", "2", "-n", "1", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["device"] == "cuda" and [r["name"] for r in report["layers"]] == ["relu_1", "softmax_1"]
    assert sum(r["share"] for r in report["layers"]) == pytest.approx(1.0, abs=1e-9)


def test_cuda_without_a_gpu_is_one_line(net_file):
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible
    result = subprocess.run([sys.executable, "-m", "cnnrun.cli", "profile", net_file, "--device", "cuda"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no CUDA GPU"), result.stderr
