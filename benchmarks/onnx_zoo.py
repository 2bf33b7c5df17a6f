"""Every network of examples/zoo/ built in PyTorch (torchvision's definitions, random weights,
batchnorm statistics randomized so that batchnorm is not an identity), exported to ONNX
(``torch.onnx.export``, the TorchScript exporter), imported into cnnrun: the largest relative
difference of the outputs, and cnnrun's inference time against onnxruntime's on the same file.

    python benchmarks/onnx_zoo.py                       # every zoo network, 224 x 224, batch 1
    python benchmarks/onnx_zoo.py --net resnet18 --size 96 --repeats 5

Times are CPU seconds of one thread (``time.process_time``; NUMBA_NUM_THREADS=1 and onnxruntime's
intra-op threads 1), medians of repeats alternating between the two, after one warm-up run each.
Needs torch, torchvision and onnxruntime (none of them is needed by cnnrun or its tests).
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # before Numba is imported
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = sorted(path.stem for path in (ROOT / "examples" / "zoo").glob("*.json"))


def torch_model(name: str):
    """torchvision's ``name`` with random weights and randomized batchnorm statistics, in eval mode."""
    import torch
    import torchvision.models as models

    torch.manual_seed(0)
    options = {"init_weights": True, "aux_logits": False} if name == "googlenet" else {}
    model = getattr(models, name)(**options).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def median_cpu_seconds(runs: dict, repeats: int) -> dict:
    """Each callable of ``runs`` once to warm up, then ``repeats`` times alternating; median CPU seconds."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.process_time()
            run()
            times[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def check(name: str, size: int, batch: int, repeats: int, opset: int, folder: Path) -> str:
    import onnxruntime
    import torch

    from cnnrun.engine.onnx import import_onnx

    model = torch_model(name)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    path = folder / f"{name}.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), opset_version=opset, dynamo=False, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    except Exception as exc:  # e.g. an adaptive pooling that the exporter cannot write at this size
        return f"| {name} | export failed: {str(exc).splitlines()[0][:100]} | | | |"
    with torch.no_grad():
        expected = model(x).numpy()
    try:
        net = import_onnx(path)
    except Exception as exc:  # the table shows what failed
        return f"| {name} | import failed: {str(exc).splitlines()[0][:100]} | | | |"
    inputs = x.numpy()
    difference = float(np.abs(net.forward(inputs) - expected).max() / np.abs(expected).max())
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    times = median_cpu_seconds({"cnnrun": lambda: net.forward(inputs),
                                "onnxruntime": lambda: session.run(None, {"x": inputs})}, repeats)
    return (f"| {name} | {len(net.nodes)} | {difference:.1e} | {times['cnnrun'] * 1000:.0f} / "
            f"{times['onnxruntime'] * 1000:.0f} | {times['cnnrun'] / times['onnxruntime']:.1f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", action="append", choices=NETWORKS, help="A zoo network (default: all).")
    parser.add_argument("--size", type=int, default=224, help="Input height and width.")
    parser.add_argument("--batch", type=int, default=1, help="Batch size.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of each side.")
    parser.add_argument("--opset", type=int, default=17, help="The opset torch.onnx.export writes.")
    args = parser.parse_args(argv)
    try:
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as exc:
        sys.exit(f"{exc.name} is not installed: this benchmark needs torch, torchvision and onnxruntime")
    print(f"input (N, 3, {args.size}, {args.size}), N = {args.batch}, opset {args.opset}; load average "
          f"{os.getloadavg()[0]:.2f}; CPU milliseconds of one thread, median of {args.repeats}")
    print("| network | cnnrun layers | max relative difference | cnnrun / onnxruntime ms | ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.net or NETWORKS:
            print(check(name, args.size, args.batch, args.repeats, args.opset, Path(folder)), flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
