"""Data-parallel scaling over MPI: ResNet-20 (examples/resnet20_cifar10.json) training steps on 1 and
2 ranks, 1 Numba thread each, the same global batch, and the share of a step spent in the gradient
Allreduce (docs/distributed.md, "Measured scaling").

    python benchmarks/distributed_scaling.py            # launches mpiexec -n 1 and -n 2 itself
    python benchmarks/distributed_scaling.py --steps 4  # quicker

Each rank runs the trainer's step (forward, loss, weighted loss gradient, backward, bucketed
Allreduce, SGD) on random CIFAR-sized inputs and measures it in process CPU time (MPICH polls while
it waits, so a rank's time in Allreduce includes waiting for the slower rank) and wall time; after
the steps, the bare Allreduce of the gradient buckets is timed behind a barrier (the communication
itself: the most that overlapping it with backward could hide). Samples/s = global batch / the
median step time of the slowest rank. The CPU and load average are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESNET20 = ROOT / "examples" / "resnet20_cifar10.json"


def worker(steps: int, batch: int) -> None:
    """One rank's measurements, gathered on rank 0 and printed there as one JSON line."""
    from types import SimpleNamespace

    from cnnrun.engine.batch_loss import BatchLoss
    from cnnrun.engine.distributed import world
    from cnnrun.engine.network import Network, read_network_file
    from cnnrun.engine.optim import make_optimizer
    from cnnrun.engine.plugins import default_registries

    comm = world()
    net = Network.from_config(read_network_file(RESNET20))
    config = {"batch_size": batch, "drop_last": False}
    comm.attach(SimpleNamespace(net=net, config=config, train_data=range(batch)))
    loss = BatchLoss(net, "cross_entropy")
    optimizer = make_optimizer({"type": "sgd", "lr": 0.01, "momentum": 0.9}, default_registries().optimizers)
    rng = np.random.default_rng(comm.rank)
    shard = len(comm.shard(np.arange(batch)))
    x = rng.standard_normal((shard, *net.input_shape)).astype(np.float32)
    y = rng.integers(0, 10, shard)
    cpu, wall, reduce = [], [], []
    for step in range(steps + 2):  # the first two load kernels and warm caches
        allreduce_before = getattr(comm, "allreduce_seconds", 0.0)
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        _, _, grad, _ = loss(net.forward(x, training=True), y)
        loss.backward(net, comm.weight_gradient(grad, shard, batch))
        comm.sum_gradients(net)
        optimizer.apply(net.params, net.grads, 0.01)
        if step >= 2:
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started_wall)
            reduce.append(getattr(comm, "allreduce_seconds", 0.0) - allreduce_before)
    bare = []
    if comm.size > 1:
        for _ in range(10):
            comm.comm.Barrier()
            started = time.process_time()
            comm.sum_gradients(net)
            bare.append(time.process_time() - started)
    mine = {"cpu": statistics.median(cpu), "wall": statistics.median(wall),
            "allreduce": statistics.median(reduce), "bare_allreduce": statistics.median(bare) if bare else 0.0,
            "buckets": len(getattr(comm, "buckets", [])), "threads": _threads()}
    ranks = comm.comm.gather(mine, root=0) if comm.size > 1 else [mine]
    if comm.is_root:
        print(json.dumps({"ranks": ranks, "batch": batch, "steps": steps}))


def _threads() -> int:
    import numba

    return numba.get_num_threads()


def run(ranks: int, steps: int, batch: int) -> dict:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec")
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    done = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker", "--steps", str(steps),
                           "--batch", str(batch)], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="measured steps per run (after 2 warm-up steps)")
    parser.add_argument("--batch", type=int, default=64, help="the global batch")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.batch)
        return
    from data_pipeline import cpu_name

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; load average before: {os.getloadavg()}")
    results = {ranks: run(ranks, args.steps, args.batch) for ranks in (1, 2)}
    base = args.batch / results[1]["ranks"][0]["cpu"]
    for ranks, result in results.items():
        slowest = max(result["ranks"], key=lambda r: r["cpu"])
        cpu_rate, wall_rate = args.batch / slowest["cpu"], args.batch / max(r["wall"] for r in result["ranks"])
        share = max(r["allreduce"] / r["cpu"] for r in result["ranks"])
        bare = max(r["bare_allreduce"] / r["cpu"] for r in result["ranks"])
        print(f"{ranks} rank(s), {slowest['threads']} thread each, global batch {args.batch}: "
              f"{cpu_rate:.1f} samples/s (CPU time), {wall_rate:.1f} samples/s (wall); efficiency "
              f"{cpu_rate / (ranks * base):.0%}; Allreduce {share:.1%} of a step (bare Allreduce "
              f"{bare:.2%}, {slowest['buckets']} buckets)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
