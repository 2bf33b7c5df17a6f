"""How fast data reaches training: image_folder decoding, augmentation of a CIFAR batch, and the share
of a ResNet-20 training step (examples/resnet20_cifar10.json) spent waiting for data.

    python benchmarks/data_pipeline.py              # every part
    python benchmarks/data_pipeline.py --quick      # fewer images and steps

Everything runs on files this script writes (PNG, JPEG and CIFAR-10 binary records of random pixels:
they decode and train at the speed of real ones). It prints the CPU, the load average and each figure;
docs/performance.md ("The data pipeline") holds one run's output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESNET20 = ROOT / "examples" / "resnet20_cifar10.json"
CIFAR_RECORD = 1 + 3 * 32 * 32


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def write_images(folder: Path, count: int, suffix: str, rng) -> None:
    """``count`` random 32x32 RGB images in 10 class folders."""
    from PIL import Image

    for i in range(count):
        klass = folder / f"class{i % 10}"
        klass.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(klass / f"{i}{suffix}")


def image_folder_speed(count: int, rng) -> list[str]:
    """Images per second of the decoding pass, and the time of one uncached and one cached batch of 128."""
    from cnnrun.engine.data import prepare_data
    from cnnrun.engine.plugins import default_registries

    lines = []
    for suffix in (".png", ".jpg"):
        with tempfile.TemporaryDirectory() as tmp:
            write_images(Path(tmp), count, suffix, rng)
            for cache_mb, what in ((0, "uncached"), (1024, "cached")):
                started = time.perf_counter()
                prepared = prepare_data({"type": "image_folder", "path": tmp, "cache_mb": cache_mb},
                                        input_shape=(3, 32, 32), num_classes=10, validation_split=0.0, seed=0,
                                        registry=default_registries().data_sources, base_dir=Path("."))
                load = time.perf_counter() - started
                x = prepared.train.x
                times = []
                for start in range(0, min(len(x), 128 * 8), 128):
                    t = time.perf_counter()
                    x[start:start + 128]
                    times.append(time.perf_counter() - t)
                lines.append(f"image_folder {suffix[1:]:4} {what:8}: load pass {count / load:7.0f} images/s, "
                             f"a batch of 128 {1000 * statistics.median(times):6.2f} ms")
    return lines


def augmentation_cost(rng, repeats: int) -> str:
    """Median CPU time of random_crop (padding 4) + horizontal_flip on a CIFAR batch of 128."""
    from cnnrun.engine.augment import make_augmenter

    augmenter = make_augmenter([{"type": "random_crop", "size": 32, "padding": 4}, {"type": "horizontal_flip"}])
    x = rng.random((128, 3, 32, 32), dtype=np.float32)
    augmenter(x, np.random.default_rng(0))  # compile
    times = []
    for i in range(repeats):
        t = time.process_time()
        augmenter(x, np.random.default_rng(i))
        times.append(time.process_time() - t)
    return (f"augmentation (random_crop padding 4 + horizontal_flip), batch 128x3x32x32: "
            f"{1000 * statistics.median(times):.2f} ms CPU time (median of {repeats})")


def write_cifar(folder: Path, per_file: int, rng) -> None:
    """CIFAR-10 binary files of random records (label byte, 3072 pixel bytes)."""
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (per_file, CIFAR_RECORD), dtype=np.uint8)
        records[:, 0] %= 10
        (folder / name).write_bytes(records.tobytes())
    (folder / "batches.meta.txt").write_text("".join(f"class{i}\n" for i in range(10)))


def resnet20_data_wait(per_file: int, rng) -> str:
    """One epoch of examples/resnet20_cifar10.json on generated CIFAR files: samples/s and data wait."""
    from cnnrun.engine.progress import Reporter
    from cnnrun.engine.train import train

    class Record(Reporter):
        def epoch_end(self, metrics):
            self.metrics = metrics

    config = json.loads(RESNET20.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar(Path(tmp) / "cifar", per_file, rng)
        config["train"]["data"]["path"] = str(Path(tmp) / "cifar")
        reporter = Record()
        train(config, overrides={"epochs": 1}, out=Path(tmp) / "run", reporter=reporter)
    m = reporter.metrics
    steps = -(-5 * per_file // config["train"]["batch_size"])
    return (f"ResNet-20 training, batch {config['train']['batch_size']}, {5 * per_file} samples ({steps} steps): "
            f"{m['samples_per_second']:.0f} samples/s, {1000 * m['seconds'] / steps:.0f} ms a step, data wait "
            f"{m['data_wait_seconds']:.3f} s = {m['data_wait_seconds'] / m['seconds']:.2%} of the training time")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images, repeats and steps")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{cpu_name()}, {os.cpu_count()} cores, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'all')}, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for line in image_folder_speed(500 if args.quick else 2000, rng):
        print(line)
    print(augmentation_cost(rng, 20 if args.quick else 100))
    print(resnet20_data_wait(128 if args.quick else 256, rng))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
