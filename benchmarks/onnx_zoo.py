"""The networks of examples/zoo/ through ONNX: built in PyTorch, exported, imported into cnnrun.

    python benchmarks/onnx_zoo.py                       # every zoo network (needs torch, torchvision, onnxruntime)
    python benchmarks/onnx_zoo.py resnet18 mobilenet_v2 --size 160 --repeat 5
    python benchmarks/onnx_zoo.py --from-cnnrun         # cnnrun's own zoo files, exported by export_onnx
    python benchmarks/onnx_zoo.py --export              # and export each imported network back

For each network: torchvision's definition with random weights, batchnorm statistics and affine
parameters randomized (so that no batchnorm is an identity), in evaluation mode, exported by
``torch.onnx.export`` (the TorchScript exporter; input ``input``, a dynamic batch axis; batchnorm kept
as BatchNormalization nodes), imported with
``cnnrun.engine.onnx.import_onnx``; printed: the largest relative difference of cnnrun's output from
PyTorch's and from onnxruntime's (max |a - b| / max |b|), and the inference time of cnnrun and of
onnxruntime on the same file (CPU time of one thread: NUMBA_NUM_THREADS=1, onnxruntime with one
intra-op thread, ``time.process_time``; medians of ``--repeat`` alternating runs after a warm-up).
A network whose torchvision definition is missing is skipped with a message. ``--from-cnnrun``
needs neither torch nor torchvision: the zoo's JSON networks (random weights, randomized batchnorm
statistics) are written by ``export_onnx`` and run by onnxruntime. Report the load average with
the figures (printed at the end).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # before numba is imported
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "examples" / "zoo"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="zoo networks (default: all of examples/zoo/)")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each runtime (default 3)")
    parser.add_argument("--opset", type=int, default=17, help="the opset of the exported files (default 17)")
    parser.add_argument("--from-cnnrun", action="store_true", help="export cnnrun's zoo files (no torch needed)")
    parser.add_argument("--export", action="store_true", help="also export each imported network back "
                                                              "(export_onnx) and compare onnxruntime's outputs")
    args = parser.parse_args()
    names = args.names or sorted(p.stem for p in ZOO.glob("*.json"))
    unknown = [n for n in names if not (ZOO / f"{n}.json").exists()]
    if unknown:
        parser.error(f"not in examples/zoo/: {', '.join(unknown)}")
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime is not installed: pip install onnxruntime", file=sys.stderr)
        return 1
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    print(f"{'network':<20} {'vs torch':>9} {'vs ort':>9} {'cnnrun ms':>10} {'ort ms':>9} {'ratio':>7}  notes")
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            path = Path(folder) / f"{name}.onnx"
            row = (from_cnnrun if args.from_cnnrun else from_torch)(name, path, x, args.opset)
            if row is None:
                continue
            net, reference, notes = row
            compare(name, net, path, x, reference, args, onnxruntime, notes)
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs; one thread each")
    return 0


def from_torch(name: str, path: Path, x: np.ndarray, opset: int):
    """``(cnnrun network, PyTorch's output, notes)`` for torchvision's ``name``, or None (skipped)."""
    try:
        import torch
        import torchvision
    except ImportError as exc:
        print(f"{name:<20} skipped: {exc.name} is not installed (pip install torch torchvision)")
        return None
    builder = getattr(torchvision.models, name, None)
    if builder is None:
        print(f"{name:<20} skipped: torchvision {torchvision.__version__} has no models.{name}")
        return None
    torch.manual_seed(0)
    torch.set_num_threads(1)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = builder(weights=None, **kwargs).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
        inputs = torch.from_numpy(x)
        expected = model(inputs).numpy()
        # the TorchScript exporter; PRESERVE (the model is in eval mode) keeps BatchNormalization nodes,
        # which EVAL would fold into the convs
        export = dict(input_names=["input"], output_names=["output"], opset_version=opset,
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, training=torch.onnx.TrainingMode.PRESERVE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            try:
                torch.onnx.export(model, (inputs,), str(path), dynamo=False, **export)
            except TypeError:  # a torch without the dynamo switch
                torch.onnx.export(model, (inputs,), str(path), **export)
    net = imported(name, path)
    return None if net is None else (net, expected, "")


def imported(name: str, path: Path):
    from cnnrun.engine import CnnrunError

    try:
        from cnnrun.engine.onnx import import_onnx
    except ImportError as exc:
        print(f"{name:<20} skipped: cnnrun.engine.onnx.import_onnx is not available ({exc})")
        return None
    try:
        return import_onnx(path)
    except CnnrunError as exc:
        print(f"{name:<20} skipped: import_onnx refused it: {exc}")
        return None


def from_cnnrun(name: str, path: Path, x: np.ndarray, opset: int):
    """``(cnnrun network, its own output, notes)``: the zoo file at the input size, random weights and
    batchnorm statistics, written to ``path`` by export_onnx."""
    from cnnrun.engine import Network
    from cnnrun.engine.network import read_network_file
    from cnnrun.engine.onnx import export_onnx

    config = read_network_file(ZOO / f"{name}.json")
    config["input"]["shape"] = list(x.shape[1:])
    net = Network.from_config(config)
    rng = np.random.default_rng(0)
    for tree in (net.params, net.buffers):
        for arrays in tree.values():
            for key, array in arrays.items():
                if array.ndim == 1:  # biases, batchnorm parameters and statistics; the weights are random already
                    array[...] = rng.uniform(0.5, 2.0, array.shape) if key == "running_var" else \
                        rng.normal(0, 0.2, array.shape) + (1.0 if key == "weight" else 0.0)
    export_onnx(net, path, opset=opset)
    return net, net.forward(x, training=False), "export_onnx"


def compare(name, net, path, x, reference, args, onnxruntime, notes) -> None:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    run_ort = lambda: session.run(None, {session.get_inputs()[0].name: x})[0]
    run_cnnrun = lambda: net.backend.to_host(net.forward(x, training=False))
    ours, theirs = run_cnnrun(), run_ort()  # also the warm-up (and Numba's compilation)
    vs_torch = relative(ours, reference) if not args.from_cnnrun else float("nan")
    if args.export:
        from cnnrun.engine.onnx import export_onnx

        again = path.with_suffix(".cnnrun.onnx")
        export_onnx(net, again, opset=args.opset)
        back = onnxruntime.InferenceSession(str(again), options, providers=["CPUExecutionProvider"])
        notes += f" re-exported vs ort {relative(back.run(None, {'input': x})[0], theirs):.1e}"
    times = {"cnnrun": [], "ort": []}
    for _ in range(args.repeat):
        for key, run in (("cnnrun", run_cnnrun), ("ort", run_ort)):
            start = time.process_time()
            run()
            times[key].append(time.process_time() - start)
    ms = {key: 1000 * statistics.median(values) for key, values in times.items()}
    print(f"{name:<20} {vs_torch:>9.1e} {relative(ours, theirs):>9.1e} {ms['cnnrun']:>10.1f} {ms['ort']:>9.1f} "
          f"{ms['cnnrun'] / ms['ort']:>7.2f}  {notes.strip()}", flush=True)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))


if __name__ == "__main__":
    sys.exit(main())
