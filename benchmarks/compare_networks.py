"""Time whole networks in cnnrun against PyTorch (training steps) and onnxruntime (inference), the
same weights in each, in the same run; print the table (docs/performance.md holds one run's).

    python benchmarks/compare_networks.py                          # every case, 2 threads, wall clock
    python benchmarks/compare_networks.py --threads 1 --cpu-time   # per-thread speed, steady on a busy machine
    python benchmarks/compare_networks.py --case resnet20-infer-b1 --repeats 9

The networks are examples/resnet20_cifar10.json (3x32x32) and examples/mobilenet_v1.json (width 0.5,
3x128x128), built by cnnrun from seed 0, their batchnorm statistics and affine parameters set to
seeded non-trivial values. PyTorch runs a module graph built from the same nodes with cnnrun's
arrays copied in; onnxruntime runs that module exported by ``torch.onnx.export``. Before timing,
each case checks that the two sides agree (compare_torch.py's fingerprints); the onnxruntime worker
also checks PyTorch's eval output against onnxruntime's. A training step is forward, cross-entropy,
backward and an SGD-momentum update; an inference call is cnnrun's ``forward(x, training=False)``
with its inference plan (batchnorm folded, add and relu fused, :mod:`cnnrun.engine.plan`). Each
library runs in its own worker process (compare_torch.py's ``Worker`` and ``measure``: single repeats
alternating, medians). Needs torch, onnx and onnxruntime (benchmark-only dependencies).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_torch import (SGD, THREAD_VARIABLES, Worker, _fingerprint, _labels, measure,  # noqa: E402
                           torch_training_step)

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = {"resnet20": ROOT / "examples" / "resnet20_cifar10.json",
            "mobilenet": ROOT / "examples" / "mobilenet_v1.json"}
CHECK_BATCH = 2  # the batch on which the onnxruntime worker compares PyTorch with onnxruntime


@dataclass(frozen=True)
class NetCase:
    """One timed workload: ``mode`` "train" (vs PyTorch) or "infer" (vs onnxruntime) of ``network``
    at ``batch``; ``loops`` calls per timed repeat (small batches); ``target`` the ratio we aim for."""

    name: str
    network: str
    mode: str
    batch: int
    target: float
    loops: int = 1
    unfused: bool = False  # cnnrun's inference without its plan (the layers one by one)
    agreement: float = 1e-3  # relative tolerance of the fingerprints compared before timing

    @property
    def label(self) -> str:
        what = "training step" if self.mode == "train" else "inference"
        return f"{self.network} {what}, batch {self.batch}"

    @property
    def reference(self) -> str:
        return "PyTorch" if self.mode == "train" else "onnxruntime"


CASES = [
    # The first conv's weight gradient below 19 batchnorms in training mode (a sum of 128 samples'
    # cancelling terms): PyTorch's float32 step is 1.07e-3 of its largest value from PyTorch's float64
    # step, cnnrun's 0.75-2.0e-3 depending on which 3x3 convs take Winograd (each conv alone is within
    # 2.5e-7 of float64), so two float32 runs cannot be held to 1e-3 of each other; a wrong kernel is
    # off by the order of the values.
    NetCase("resnet20-train-b128", "resnet20", "train", 128, 1.0, agreement=5e-3),
    NetCase("resnet20-infer-b32", "resnet20", "infer", 32, 1.0),
    NetCase("resnet20-infer-b1", "resnet20", "infer", 1, 1.5, loops=20),
    # The first conv's weight gradient below 27 batchnorms in training mode: float32 against float64
    # differs by up to 5.6e-3 of its largest value in cnnrun alone, so PyTorch's float32 cannot agree to 1e-3.
    NetCase("mobilenet-train-b16", "mobilenet", "train", 16, 1.0, agreement=1e-2),
    NetCase("mobilenet-infer-b1", "mobilenet", "infer", 1, 1.0, loops=10),
    NetCase("mobilenet-infer-b16", "mobilenet", "infer", 16, 1.0),
]


# -- the same network and weights on every side ---------------------------------------------------
def cnnrun_network(name: str):
    """The cnnrun network ``name`` from seed 0, batchnorm's parameters and running statistics
    seeded away from their initial 1 and 0 (so folding is exercised)."""
    import numpy as np

    from cnnrun.engine import Network

    net = Network.from_json(NETWORKS[name])
    rng = np.random.default_rng(5)
    for node in net.nodes:
        if node.layer.type_name == "batchnorm":
            c = net.params[node.name]["weight"].shape[0]
            net.params[node.name]["weight"][...] = rng.uniform(0.5, 1.5, c)
            net.params[node.name]["bias"][...] = rng.normal(0, 0.2, c)
            net.buffers[node.name]["running_mean"][...] = rng.normal(0, 0.2, c)
            net.buffers[node.name]["running_var"][...] = rng.uniform(0.5, 2.0, c)
    return net


def _input(net, batch):
    import numpy as np

    return np.random.default_rng(7).standard_normal((batch, *net.input_shape), dtype=np.float32)


def torch_module(net):
    """A torch module computing ``net`` (conv2d, batchnorm, relu, add, global_avgpool, flatten,
    linear), with copies of its parameters and buffers."""
    import torch
    from torch import nn

    def module_of(node):
        layer, shape = node.layer, node.input_shapes[0]
        kind = layer.type_name
        if kind == "conv2d":
            (top, _), (left, _) = layer.pads(shape[1:])
            return nn.Conv2d(shape[0], layer.out_channels, layer.kernel_size, layer.stride, (top, left),
                             layer.dilation, layer.groups, layer.bias)
        if kind == "batchnorm":
            return nn.BatchNorm2d(shape[0], layer.eps, layer.momentum)
        if kind == "linear":
            return nn.Linear(shape[0], layer.out_features, layer.bias)
        return {"relu": nn.ReLU, "global_avgpool": lambda: nn.AdaptiveAvgPool2d(1), "flatten": nn.Flatten,
                "add": nn.Identity}[kind]()

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self.order = [(node.name, node.layer.type_name, node.inputs) for node in net.nodes]
            self.layers = nn.ModuleDict({name.replace(".", "_"): module_of(node)
                                         for node, (name, _, _) in zip(net.nodes, self.order)})

        def forward(self, x):
            values = {"input": x}
            for name, kind, inputs in self.order:
                args = [values[i] for i in inputs]
                values[name] = args[0] + args[1] if kind == "add" else self.layers[name.replace(".", "_")](*args)
            return values[self.order[-1][0]]

    model = Graph()
    with torch.no_grad():
        for name, tree in (*net.params.items(), *net.buffers.items()):
            for key, value in tree.items():
                getattr(model.layers[name.replace(".", "_")], key).copy_(torch.from_numpy(value))
    return model


# -- the workers ----------------------------------------------------------------------------------
def _threads() -> int:
    return int(os.environ["OMP_NUM_THREADS"])


def cnnrun_case(case: NetCase):
    """(step, fingerprint, flops per step) for cnnrun."""
    from cnnrun.engine.losses import cross_entropy
    from cnnrun.engine.optim import make_optimizer
    from cnnrun.engine.plugins import default_registries

    net = cnnrun_network(case.network)
    x = _input(net, case.batch)
    macs = sum(row["macs"] for row in net.summary())
    if case.mode == "train":
        optimizer, labels = make_optimizer(dict(SGD), default_registries().optimizers), _labels(case.batch)

        def step():
            loss, grad = cross_entropy(net.forward(x, training=True), labels)
            net.backward(grad)
            optimizer.apply(net.params, net.grads, SGD["lr"])
            return loss

        loss = step()
        first_conv = net.nodes[0].name
        return step, _fingerprint([[loss], net.grads[first_conv]["weight"]]), 6 * case.batch * macs
    if not case.unfused:
        net.inference()
    y = net.forward(x)

    def step():
        for _ in range(case.loops):
            net.forward(x)

    return step, _fingerprint([y]), 2 * case.batch * macs * case.loops


def torch_case(case: NetCase):
    """(step, fingerprint, None) for PyTorch: the training step."""
    import torch

    torch.set_num_threads(_threads())
    net = cnnrun_network(case.network)
    model = torch_module(net).train()
    step = torch_training_step(model, _input(net, case.batch), _labels(case.batch))
    loss = step()
    first_conv = model.layers[net.nodes[0].name.replace(".", "_")]
    return step, _fingerprint([[loss.item()], first_conv.weight.grad.numpy()]), None


def onnxruntime_case(case: NetCase, folder=Path(os.environ.get("TMPDIR", "/tmp"))):
    """(step, fingerprint, None) for onnxruntime: the exported PyTorch module in eval mode, after
    checking that PyTorch and onnxruntime agree."""
    import numpy as np
    import onnxruntime
    import torch

    torch.set_num_threads(_threads())
    net = cnnrun_network(case.network)
    model = torch_module(net).eval()
    path = folder / f"compare_networks_{case.network}_{os.getpid()}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.from_numpy(_input(net, 1)),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = _threads(), 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    path.unlink()
    check = _input(net, CHECK_BATCH)
    with torch.no_grad():
        expected = model(torch.from_numpy(check)).numpy()
    got = session.run(None, {"x": check})[0]
    if not np.allclose(got, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max()):
        raise RuntimeError(f"PyTorch and onnxruntime disagree by {np.abs(got - expected).max():.3g}")
    x = _input(net, case.batch)
    y = session.run(None, {"x": x})[0]

    def step():
        for _ in range(case.loops):
            session.run(None, {"x": x})

    return step, _fingerprint([y]), None


# -- reporting ------------------------------------------------------------------------------------
def machine_line(threads: int) -> str:
    """CPU model (lscpu), its widest vector unit, cores, load average and library versions."""
    import numba
    import onnxruntime
    import torch

    model, flags = "unknown CPU", ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                model = value.strip()
            elif key.strip() == "Flags":
                flags = value.split()
    except (OSError, subprocess.CalledProcessError):
        pass
    vector = "AVX-512 (512-bit)" if "avx512f" in flags else "AVX2 (256-bit)" if "avx2" in flags else "SSE/other"
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{model}, {vector}, {os.cpu_count()} cores, {threads} thread(s) per library, load average "
            f"{load} (1/5/15 min); Numba {numba.__version__}, PyTorch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}")


def table(rows) -> str:
    lines = ["| case | workload | cnnrun ms | cnnrun GFLOP/s | reference | reference ms | cnnrun / reference "
             "| target | |", "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for case, result in rows:
        ours, theirs = result.ours / case.loops, result.theirs / case.loops
        ratio = ours / theirs
        verdict = "met" if ratio <= case.target else f"missed by {ratio / case.target - 1:.0%}"
        lines.append(f"| {case.name} | {case.label} | {ours * 1e3:.2f} | {result.rate(result.ours):.1f} "
                     f"| {case.reference} | {theirs * 1e3:.2f} | {ratio:.2f} | <= {case.target:g} | {verdict} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", choices=[c.name for c in CASES], metavar="NAME",
                        help=f"run only this case (repeatable): {', '.join(c.name for c in CASES)}")
    parser.add_argument("--threads", type=int, default=2, help="threads of each library (default 2)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="with --threads 1: time the CPU time of the worker's thread, not the wall clock")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per case (default 9; 2 warm-up)")
    parser.add_argument("--unfused", action="store_true",
                        help="run cnnrun's inference without its inference plan (each layer on its own)")
    parser.add_argument("--pause", type=float, default=0.15, help="seconds between the two libraries (default 0.15)")
    args = parser.parse_args(argv)
    if args.cpu_time and args.threads != 1:
        parser.error("--cpu-time needs --threads 1 (other threads' time would not be counted)")
    missing = [m for m in ("torch", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"{', '.join(missing)} not installed; this benchmark needs torch, onnx and onnxruntime "
              "(pip install torch --index-url https://download.pytorch.org/whl/cpu; pip install onnx onnxruntime)",
              file=sys.stderr)
        return 1
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(args.threads)))  # the workers start with it
    cases = [dataclasses.replace(c, unfused=args.unfused) for c in CASES if not args.case or c.name in args.case]
    clock = time.thread_time if args.cpu_time else time.perf_counter
    workers = {"cnnrun": Worker("cnnrun", clock, cnnrun_case)}
    if any(c.mode == "train" for c in cases):
        workers["train"] = Worker("torch", clock, torch_case)
    if any(c.mode == "infer" for c in cases):
        workers["infer"] = Worker("onnxruntime", clock, onnxruntime_case)
    rows, failed = [], []
    try:
        for case in cases:
            try:
                result = measure(case, workers["cnnrun"], workers[case.mode], 2, args.repeats, args.pause)
            except RuntimeError as exc:
                failed.append(case.name)
                print(f"{case.name:>20}  failed: {exc}", file=sys.stderr, flush=True)
                continue
            rows.append((case, result))
            print(f"{case.name:>20}  cnnrun {result.ours / case.loops * 1e3:8.2f} ms  {case.reference} "
                  f"{result.theirs / case.loops * 1e3:8.2f} ms  ratio {result.ratio:5.2f}  "
                  f"(target <= {case.target:g})", flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    clock_name = "CPU time of the worker's thread" if args.cpu_time else "wall clock"
    print(f"\nMeasured with `python benchmarks/compare_networks.py --threads {args.threads}"
          f"{' --cpu-time' if args.cpu_time else ''}{' --unfused' if args.unfused else ''} --repeats {args.repeats}` ({clock_name}; {args.repeats} timed "
          f"repeats after 2 warm-up, alternating, medians) on: {machine_line(args.threads)}.\n\n{table(rows)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
