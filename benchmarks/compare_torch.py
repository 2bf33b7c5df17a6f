"""Time cnnrun against PyTorch on the same shapes, in the same run, and write the table into
docs/performance.md (between its markers, so the prose around it survives).

    python benchmarks/compare_torch.py                  # every case; rewrites the table
    python benchmarks/compare_torch.py --quick          # fewer repeats
    python benchmarks/compare_torch.py --case c --case lenet   # some cases; prints only
    python benchmarks/compare_torch.py --threads 1 --cpu-time  # per-thread speed, steady on a busy machine

Each library runs in its own worker process (two OpenMP runtimes and OpenBLAS in one process
would spin against each other), both pinned to 2 threads. The parent alternates single repeats
between them, after a warm-up, and reports medians; every repeat is a forward and a backward pass
(for LeNet-5: forward, cross-entropy, backward and an SGD update). Before timing, the two results
are checked to agree, so both sides compute the same thing. PyTorch is optional: install the CPU
build with ``pip install torch --index-url https://download.pytorch.org/whl/cpu``.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import peak_flops  # benchmarks/, next to this script

ROOT = Path(__file__).resolve().parent.parent
LENET = ROOT / "examples" / "lenet5.json"
DOC = ROOT / "docs" / "performance.md"
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
INSTALL_HINT = ("PyTorch is not installed; install the CPU build with:\n"
                "    pip install torch --index-url https://download.pytorch.org/whl/cpu")
SGD = {"type": "sgd", "lr": 0.05, "momentum": 0.9}  # examples/lenet_digits.json's optimizer


@dataclass(frozen=True)
class Case:
    """One timed operation on NCHW float32 data: ``layer`` is its cnnrun layer (JSON), ``shape``
    the input batch; ``target`` the largest cnnrun/PyTorch time ratio we aim for."""

    name: str
    label: str
    shape: tuple[int, int, int, int]
    layer: dict = field(default_factory=dict)
    target: float = 1.0
    agreement: float = 1e-3  # relative tolerance of the fingerprints compared before timing


def _conv(name, n, c, o, size, k, target, **options):
    short = {"stride": "s", "padding": "p", "groups": "g"}
    label = f"conv {n}x{c}x{size}x{size} -> {o}, k{k}" + "".join(
        f" {short[key]}{value}" for key, value in options.items())
    layer = {"type": "conv2d", "out_channels": o, "kernel_size": k, **options}
    return Case(name, label, (n, c, size, size), layer, target)


POOL_SHAPE = (32, 64, 56, 56)
CASES = [
    _conv("a", 64, 1, 6, 28, 5, 1.0, padding=2),
    _conv("b", 64, 6, 16, 14, 5, 1.0),
    _conv("c", 32, 64, 64, 56, 3, 1.0, padding=1),
    _conv("d", 32, 128, 128, 28, 3, 1.0, padding=1),
    _conv("e", 32, 256, 64, 28, 1, 1.0),
    _conv("f", 32, 64, 64, 56, 3, 1.0, padding=1, groups=64),
    _conv("g", 32, 64, 64, 56, 3, 1.0, stride=2, padding=1),
    Case("maxpool", "maxpool 2x2 32x64x56x56", POOL_SHAPE, {"type": "maxpool2d", "kernel_size": 2}, 0.5),
    Case("avgpool", "avgpool 2x2 32x64x56x56", POOL_SHAPE, {"type": "avgpool2d", "kernel_size": 2}, 0.5),
    Case("gap", "global avgpool 32x64x56x56", POOL_SHAPE, {"type": "global_avgpool"}, 1.0),
    Case("lenet", "LeNet-5 training step, batch 64", (64, 1, 28, 28), {}, 1.0),
]


# -- the workers ----------------------------------------------------------------------------------
def _data(case: Case):
    """The same seeded input and parameters for both libraries."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.shape, dtype=np.float32)
    layer, params = case.layer, {}
    if layer.get("type") == "conv2d":
        c, k, g = case.shape[1], layer["kernel_size"], layer.get("groups", 1)
        bound = 1 / np.sqrt(c // g * k * k)
        params["weight"] = rng.uniform(-bound, bound, (layer["out_channels"], c // g, k, k)).astype(np.float32)
        params["bias"] = rng.uniform(-bound, bound, layer["out_channels"]).astype(np.float32)
    return x, params


def _output_grad(shape):
    import numpy as np

    return np.random.default_rng(3).standard_normal(shape, dtype=np.float32)


def _labels(n):
    import numpy as np

    return np.random.default_rng(1).integers(0, 10, n)


def _fingerprint(arrays) -> list[tuple[float, float]]:
    """(projection on a fixed random vector, norm) of each array: equal arrays give equal pairs."""
    import numpy as np

    prints = []
    for a in arrays:
        a = np.asarray(a, np.float64).ravel()
        probe = np.random.default_rng(2).standard_normal(a.size)
        prints.append((float(a @ probe), float(np.linalg.norm(a))))
    return prints


def _cnnrun_case(case: Case):
    """(step, fingerprint, flops or bytes per step) for cnnrun."""
    from cnnrun.engine import Network
    from cnnrun.engine.losses import cross_entropy
    from cnnrun.engine.optim import make_optimizer
    from cnnrun.engine.plugins import default_registries

    registries = default_registries()
    if case.name == "lenet":
        net = Network.from_json(LENET, registry=registries.layers)  # initialized from seed 0
        optimizer = make_optimizer(dict(SGD), registries.optimizers)
        x, labels = _data(case)[0], _labels(case.shape[0])

        def step():
            loss, grad = cross_entropy(net.forward(x, training=True), labels)
            net.backward(grad, input_gradient=False)  # PyTorch's input does not require grad
            optimizer.apply(net.params, net.grads, SGD["lr"])
            return loss

        loss = step()
        work = 6 * case.shape[0] * sum(row["macs"] for row in net.summary())
        return step, _fingerprint([[loss], net.grads["conv1"]["weight"]]), work
    config = {"name": case.name, "input": {"shape": list(case.shape[1:])}, "layers": [{"name": "op", **case.layer}]}
    net = Network.from_config(config, registry=registries.layers)
    x, params = _data(case)
    dy = _output_grad((case.shape[0], *net.output_shape))
    for key, value in params.items():
        net.params["op"][key][...] = value

    def step():
        y = net.forward(x, training=True)
        return y, net.backward(dy)

    y, dx = step()
    grads = [net.grads["op"][key] for key in params]
    work = (6 * case.shape[0] * net.summary()[0]["macs"] if params else  # conv: 3 products, 2 flops a MAC
            2 * 4 * (x.size + y.size))  # pools: bytes read and written, forward and backward
    return step, _fingerprint([y, dx, *grads]), work


def torch_training_step(model, x, labels):
    """A function running one PyTorch training step of ``model`` on the arrays ``x``, ``labels``:
    forward, cross-entropy, backward, SGD with momentum (:data:`SGD`); it returns the loss."""
    import torch
    import torch.nn.functional as F

    sgd = torch.optim.SGD(model.parameters(), lr=SGD["lr"], momentum=SGD["momentum"])
    x, labels = torch.from_numpy(x), torch.from_numpy(labels)

    def step():
        sgd.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        sgd.step()
        return loss

    return step


def _torch_case(case: Case):
    """(step, fingerprint, None) for PyTorch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if case.name == "lenet":
        from cnnrun.engine import Network

        reference = Network.from_json(LENET)  # seed 0: the same initial parameters as cnnrun's side
        model = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
        named = {"conv1": model[0], "conv2": model[3], "fc1": model[7], "fc2": model[9], "fc3": model[11]}
        with torch.no_grad():
            for name, module in named.items():
                for key, value in reference.params[name].items():
                    getattr(module, key).copy_(torch.from_numpy(value))
        step = torch_training_step(model, _data(case)[0], _labels(case.shape[0]))
        loss = step()
        return step, _fingerprint([[loss.item()], model[0].weight.grad.numpy()]), None
    layer = case.layer
    kind = layer["type"]
    if kind == "conv2d":
        stride, padding, groups = layer.get("stride", 1), layer.get("padding", 0), layer.get("groups", 1)
        op = lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)  # noqa: E731
    elif kind == "maxpool2d":
        op = lambda x: F.max_pool2d(x, layer["kernel_size"])  # noqa: E731
    elif kind == "avgpool2d":
        op = lambda x: F.avg_pool2d(x, layer["kernel_size"])  # noqa: E731
    else:
        op = lambda x: F.adaptive_avg_pool2d(x, 1)  # noqa: E731
    x, params = _data(case)
    leaves = [torch.from_numpy(a).requires_grad_() for a in (x, params.get("weight"), params.get("bias"))
              if a is not None]
    with torch.no_grad():
        dy = torch.from_numpy(_output_grad(tuple(op(*leaves).shape)))

    def step():
        for leaf in leaves:
            leaf.grad = None
        y = op(*leaves)
        y.backward(dy)
        return y

    y = step()
    return step, _fingerprint([y.detach().numpy(), *(leaf.grad.numpy() for leaf in leaves)]), None


def _serve(make, connection, clock) -> None:
    """A worker: ``("setup", case)`` -> (fingerprint, work) from ``make(case)``; ``("time", None)`` ->
    seconds of one step."""
    step = None
    while True:
        command, argument = connection.recv()
        if command == "stop":
            return
        try:
            if command == "setup":
                step, fingerprint, work = make(argument)
                connection.send(("ok", (fingerprint, work)))
            else:
                started = clock()
                step()
                connection.send(("ok", clock() - started))
        except Exception as exc:  # reported by the parent with the case's name
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


class Worker:
    """One library in its own process; ``make(case)`` -> (step, fingerprint, work) sets a case up
    there (default: this script's cnnrun or PyTorch side)."""

    def __init__(self, library: str, clock=time.perf_counter, make=None):
        self.library = library
        make = make or (_cnnrun_case if library == "cnnrun" else _torch_case)
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(make, child, clock), daemon=True)
        self.process.start()

    def ask(self, command, argument=None):
        self.connection.send((command, argument))
        status, value = self.connection.recv()
        if status == "error":
            raise RuntimeError(f"{self.library}: {value}")
        return value

    def close(self):
        self.connection.send(("stop", None))
        self.process.join()


# -- measuring ------------------------------------------------------------------------------------
@dataclass
class Result:
    case: Case
    ours: float  # median seconds per step
    theirs: float
    work: int  # flops per step (conv, LeNet) or bytes moved (pools)

    @property
    def ratio(self) -> float:
        return self.ours / self.theirs

    @property
    def unit(self) -> str:
        return "GB/s" if "pool" in self.case.name or self.case.name == "gap" else "GFLOP/s"

    def rate(self, seconds: float) -> float:
        return self.work / seconds / 1e9


def _agree(ours, theirs, tolerance: float) -> bool:
    return all(abs(a - b) <= tolerance * max(na, nb, 1e-30) and abs(na - nb) <= tolerance * max(na, nb, 1e-30)
               for (a, na), (b, nb) in zip(ours, theirs))


def measure(case: Case, ours: Worker, theirs: Worker, warmup: int, repeats: int, pause: float) -> Result:
    """Median step time of each library, single repeats alternating between the two.

    ``pause`` seconds separate the libraries: an idle OpenBLAS thread spins about 0.1 s (2**28
    cycles) after its last call before it sleeps, and would otherwise slow the other process.
    """
    (print_ours, work), (print_theirs, _) = ours.ask("setup", case), theirs.ask("setup", case)
    if not _agree(print_ours, print_theirs, case.agreement):
        raise RuntimeError(f"case {case.name}: cnnrun and PyTorch disagree: {print_ours} vs {print_theirs}")
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for index in range(warmup + repeats):
        for key, worker in (("ours", ours), ("theirs", theirs)):
            time.sleep(pause)
            seconds = worker.ask("time")
            if index >= warmup:
                times[key].append(seconds)
    return Result(case, statistics.median(times["ours"]), statistics.median(times["theirs"]), work)


# -- reporting ------------------------------------------------------------------------------------
def table(results: list[Result], peak: float) -> str:
    """The results as a Markdown table; ``peak``: the GFLOP/s of all the threads of one library."""
    lines = ["| case | operation (forward + backward) | cnnrun ms | cnnrun rate | of peak | PyTorch ms | PyTorch rate "
             "| of peak | cnnrun / PyTorch | target | |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]

    def share(seconds):
        return f"{r.rate(seconds) / peak:.0%}" if r.unit == "GFLOP/s" else ""

    for r in results:
        verdict = "met" if r.ratio <= r.case.target else f"missed by {r.ratio / r.case.target - 1:.0%}"
        lines.append(f"| {r.case.name} | {r.case.label} | {r.ours * 1e3:.2f} | {r.rate(r.ours):.1f} {r.unit} "
                     f"| {share(r.ours)} | {r.theirs * 1e3:.2f} | {r.rate(r.theirs):.1f} {r.unit} "
                     f"| {share(r.theirs)} | {r.ratio:.2f} | <= {r.case.target:g} | {verdict} |")
    return "\n".join(lines)


def machine(threads: int, width: int, peak: float) -> str:
    import numba
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    return (f"{cpu}, {os.cpu_count()} cores, {threads} thread(s) per library; Python {platform.python_version()}, "
            f"NumPy {numpy.__version__} ({blas.get('name')} {blas.get('version')}"
            f"{f', OPENBLAS_CORETYPE={coretype}' if coretype else ''}), Numba {numba.__version__}, "
            f"PyTorch {torch.__version__}; FP32 peak {peak:.0f} GFLOP/s a thread at {width} float32 lanes "
            f"(benchmarks/peak_flops.py); load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the "
            f"end; {date.today().isoformat()}")


def write_doc(path: Path, block: str, options: str) -> None:
    """Replace the text between the markers of ``path`` for these ``options`` (the table of another
    thread count or clock has its own) with ``block``; append markers and block if there are none."""
    tag = f"compare_torch{' ' + options if options else ''}"
    begin, end = f"<!-- {tag}: begin -->", f"<!-- {tag}: end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = f"{head}{begin}\n{block}\n{end}{rest.split(end, 1)[1]}"
    else:
        text = f"{text.rstrip()}\n\n{begin}\n{block}\n{end}\n".lstrip()
    path.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 warm-up and 5 timed repeats (default 3 and 15)")
    parser.add_argument("--case", action="append", choices=[c.name for c in CASES], metavar="NAME",
                        help=f"run only this case (repeatable): {', '.join(c.name for c in CASES)}")
    parser.add_argument("--threads", type=int, default=2, help="threads of each library (default 2)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="with --threads 1: time the CPU time of the worker's thread, not the wall clock "
                             "(steadier on a busy machine)")
    parser.add_argument("--pause", type=float, default=0.15, help="seconds between the two libraries (default 0.15)")
    parser.add_argument("--no-write", action="store_true", help=f"print only; do not update {DOC.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.cpu_time and args.threads != 1:
        parser.error("--cpu-time needs --threads 1 (other threads' time would not be counted)")
    if importlib.util.find_spec("torch") is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    warmup, repeats = (2, 5) if args.quick else (3, 15)
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(args.threads)))  # the workers start with it
    cases = [c for c in CASES if not args.case or c.name in args.case]
    clock = time.thread_time if args.cpu_time else time.perf_counter
    width = peak_flops.widest_width()
    peak = peak_flops.peak(width)  # one thread's, before the workers start
    ours, theirs = Worker("cnnrun", clock), Worker("torch", clock)
    results, failed = [], []
    try:
        for case in cases:
            try:
                result = measure(case, ours, theirs, warmup, repeats, args.pause)
            except RuntimeError as exc:
                failed.append(case.name)
                print(f"{case.name:>8}  failed: {exc}", file=sys.stderr, flush=True)
                continue
            results.append(result)
            print(f"{case.name:>8}  cnnrun {result.ours * 1e3:8.2f} ms  PyTorch {result.theirs * 1e3:8.2f} ms  "
                  f"ratio {result.ratio:5.2f}  (target <= {case.target:g})", flush=True)
    finally:
        ours.close()
        theirs.close()
    options = " ".join([*([f"--threads {args.threads}"] if args.threads != 2 else []),
                        *(["--cpu-time"] if args.cpu_time else [])])
    command = " ".join(["python benchmarks/compare_torch.py", *(["--quick"] if args.quick else []), options]).strip()
    block = (f"Measured with `{command}` ({repeats} timed repeats after {warmup} warm-up, medians) on: "
             f"{machine(args.threads, width, peak)}.\n\n{table(results, peak * args.threads)}")
    print()
    print(block)
    if failed:
        print(f"\nfailed: {', '.join(failed)}; {DOC.relative_to(ROOT)} left unchanged", file=sys.stderr)
        return 1
    if not args.no_write and not args.case:
        write_doc(DOC, block, options)
        print(f"\nwrote the table into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
