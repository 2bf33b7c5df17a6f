"""Data-parallel training over MPI: ``mpiexec -n N cnnrun train NET.json`` (docs/distributed.md).

Every rank holds the whole network. Each step, rank r takes its share of the global batch (the
global batch is drawn as in one process; rank r takes part r of ``np.array_split(batch, N)``),
weights its loss gradient by n_r / N (n_r: its share, N: the global batch), runs backward, and the
parameter gradients are summed over the ranks with Allreduce, in place, one flat buffer per bucket:
every rank applies the one-process gradient of the global batch, an uneven last batch included.
PyTorch: ``DistributedDataParallel`` (which averages equal shards).

The trainer talks to :class:`OneProcess` (all no-ops: the one-process path is unchanged) or, under
an MPI launcher, to :class:`MpiComm`; mpi4py is imported only then (:func:`world`).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
import traceback
from contextlib import contextmanager

import numpy as np

from .errors import CnnrunError, ConfigError
from .metrics import measure

# Set by the launchers for each process: MPICH/Intel MPI (hydra), Open MPI, MVAPICH, Slurm's srun.
LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
FORCE = "CNNRUN_MPI"  # "1": use MPI even without a known launcher variable; "0": never
BUCKET_BYTES = 4 << 20  # gradients are summed in flat buffers of about this size, last layer first


def under_mpi_launcher(environ=None) -> bool:
    """Whether an MPI launcher started this process among several: one of :data:`LAUNCHER_SIZES`
    above 1, or ``CNNRUN_MPI=1`` (``CNNRUN_MPI=0``: never)."""
    environ = os.environ if environ is None else environ
    force = environ.get(FORCE, "").strip()
    if force in ("0", "1"):
        return force == "1"
    return any(environ.get(name, "").strip().isdigit() and int(environ[name]) > 1 for name in LAUNCHER_SIZES)


@functools.lru_cache(maxsize=None)
def world() -> "OneProcess":
    """This process's place in its training run: :class:`MpiComm` when an MPI launcher started
    several processes (or ``CNNRUN_MPI=1``), else :data:`ONE_PROCESS`. Made once per process."""
    if not under_mpi_launcher():
        return ONE_PROCESS
    try:
        from mpi4py import MPI
    except ImportError:
        raise CnnrunError("this process was started by an MPI launcher, but mpi4py is not installed: "
                          "pip install 'cnnrun[mpi]' (or set CNNRUN_MPI=0 to train in one process)") from None
    size = MPI.COMM_WORLD.Get_size()
    launched = next(((name, int(os.environ[name])) for name in LAUNCHER_SIZES
                     if os.environ.get(name, "").strip().isdigit()), None)
    if launched is not None and launched[1] != size:
        raise CnnrunError(f"the launcher started {launched[1]} processes ({launched[0]}), but MPI sees {size}: "
                          f"mpiexec is not the one of the MPI that mpi4py uses "
                          f"({MPI.Get_library_version().splitlines()[0].strip()}); run that one's mpiexec, "
                          f"e.g. {os.path.join(os.path.dirname(sys.executable), 'mpiexec')}")
    return MpiComm(MPI) if size > 1 else ONE_PROCESS


class OneProcess:
    """The ranks of a one-process run: one rank, the root; every method leaves things as they are."""

    rank, size, is_root = 0, 1, True

    def attach(self, trainer) -> None:
        """Check ``trainer``'s run fits the ranks and connect its network to them."""

    def shard(self, index: np.ndarray) -> np.ndarray:
        """This rank's part of the indices of one global batch."""
        return index

    def seed_streams(self, trainer, epoch: int) -> None:
        """Give this rank its own dropout and augmentation streams for ``epoch`` (ranks > 0)."""

    def weight_gradient(self, grad, count: int, total: int):
        """The loss gradient of a shard of ``count`` examples (the gradient of its mean loss) as its
        part of the gradient of the global batch's mean loss, ``total`` examples."""
        return grad

    def sum_gradients(self, net) -> None:
        """Sum ``net.grads`` over the ranks, in place."""

    def epoch_totals(self, net, *values: float) -> tuple[float, ...]:
        """At an epoch's end: the sums over the ranks of ``values``; every rank gets rank 0's buffers
        (per-rank batchnorm statistics: those of rank 0, as DDP's ``broadcast_buffers``)."""
        return values

    def evaluate(self, net, batch_loss, examples, batch_size: int, metrics=()) -> dict:
        """``{"loss", "accuracy", <metric>: ...}`` of ``net`` over ``examples``
        (:func:`~cnnrun.engine.metrics.measure`; under MPI each rank evaluates its share)."""
        return measure(net, batch_loss, examples, batch_size, metrics)

    def share_start(self, trainer) -> None:
        """Give every rank the root's starting state (weights, optimizer, position, RNG states)."""

    @contextmanager
    def guard(self):
        """Around a run: under MPI, an exception on any rank stops every rank (:meth:`MpiComm.guard`)."""
        yield


ONE_PROCESS = OneProcess()


class MpiComm(OneProcess):
    """The ranks of ``MPI.COMM_WORLD``. ``allreduce_seconds``: process time spent summing gradients."""

    def __init__(self, mpi):
        self.MPI = mpi
        self.comm = mpi.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        self.host = mpi.Get_processor_name()
        self.local_size = self.comm.Split_type(mpi.COMM_TYPE_SHARED).Get_size()  # ranks on this host
        self.threads = set_threads(self.local_size)  # Numba's, on this rank
        self.buckets: list[np.ndarray] = []
        self.allreduce_seconds = 0.0

    def attach(self, trainer) -> None:
        net, config = trainer.net, trainer.config
        if net.device != "cpu":
            raise ConfigError(f"training over MPI runs on the cpu device; got --device {net.device}", section="train")
        n, batch_size = len(trainer.train_data), config["batch_size"]
        last = n % batch_size if n % batch_size and not config["drop_last"] else batch_size
        smallest = min(batch_size, last, n)
        if smallest < self.size:
            which = "every batch" if smallest == batch_size else f"the last batch ({n} training examples)"
            raise ConfigError(f"{self.size} ranks need at least {self.size} examples in every batch, one per "
                              f"rank; {which} holds {smallest} (batch_size {batch_size}): use a larger "
                              f"batch_size, \"drop_last\": true, or fewer ranks", section="train")
        single = [node.name for node in net.nodes
                  if node.layer.type_name == "batchnorm" and math.prod(node.input_shapes[0][1:]) == 1]
        if single and smallest // self.size == 1:
            raise ConfigError(f"layer '{single[0]}' (batchnorm) needs more than one value per channel in training, "
                              f"and it sees one value per example: with {self.size} ranks, a batch of {smallest} "
                              f"gives a rank 1 example; use a larger batch_size, \"drop_last\": true, or fewer "
                              f"ranks", section="train")
        for ctx in net.contexts.values():
            ctx.comm = self
        self.buckets = bucket_gradients(net, BUCKET_BYTES)

    def shard(self, index):
        return np.array_split(index, self.size)[self.rank]

    def seed_streams(self, trainer, epoch):
        if self.is_root:
            return  # the root draws the streams of one process, which the checkpoints hold
        contexts = list(trainer.net.contexts.values())
        seeds = np.random.SeedSequence([trainer.config["seed"], epoch, self.rank]).spawn(len(contexts) + 1)
        trainer.augment_rng = np.random.default_rng(seeds[0])
        for ctx, seed in zip(contexts, seeds[1:]):
            ctx.rng = np.random.default_rng(seed)

    def weight_gradient(self, grad, count, total):
        if count != total:
            np.multiply(grad, grad.dtype.type(count / total), out=grad)
        return grad

    def sum_gradients(self, net):
        started = time.process_time()
        for flat in self.buckets:
            self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        self.allreduce_seconds += time.process_time() - started

    def sum(self, values: np.ndarray) -> np.ndarray:
        """The sum over the ranks of a float64 array (synchronized batchnorm's statistics)."""
        total = np.ascontiguousarray(values, np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, total, op=self.MPI.SUM)
        return total

    def epoch_totals(self, net, *values):
        for arrays in net.buffers.values():
            for array in arrays.values():
                self.comm.Bcast(array, root=0)
        return self.sum_values(*values)

    def sum_values(self, *values: float) -> tuple[float, ...]:
        """The sums over the ranks of ``values``."""
        return tuple(float(v) for v in self.sum(np.array(values, np.float64)))

    def evaluate(self, net, batch_loss, examples, batch_size, metrics=()):
        """Loss and accuracy from each rank's share, summed; with metrics (which keep their own state
        and cannot be summed), every rank measures the whole set."""
        if metrics:
            return measure(net, batch_loss, examples, batch_size, metrics)
        part = examples.take(np.array_split(np.arange(len(examples)), self.size)[self.rank])
        n = len(part)
        measured = measure(net, batch_loss, part, batch_size) if n else {"loss": 0.0, "accuracy": 0.0}
        total_loss, total_correct, total = self.sum_values(measured["loss"] * n, measured["accuracy"] * n, n)
        return {"loss": total_loss / total, "accuracy": total_correct / total}

    def share_start(self, trainer):
        """Also says, on rank 0's reporter, how the run is spread: ranks, hosts, threads."""
        state = (trainer.checkpoint(trainer.last_record), trainer.history) if self.is_root else None
        checkpoint, history = self.comm.bcast(state, root=0)
        places = self.comm.gather((self.host, os.getpid(), self.threads), root=0)
        if not self.is_root:
            trainer.restore(checkpoint, "rank 0's starting state")
            trainer.history = history
            return
        hosts = sorted({host for host, _, _ in places})
        fewest, most = min(t for *_, t in places), max(t for *_, t in places)
        pids = ", ".join(str(pid) for _, pid, _ in places[:8]) + (", ..." if self.size > 8 else "")
        trainer.reporter.note(f"training on {self.size} ranks over MPI on {len(hosts)} host(s) "
                              f"({', '.join(hosts[:4])}{', ...' if len(hosts) > 4 else ''}), "
                              f"{fewest if fewest == most else f'{fewest}-{most}'} Numba thread(s) each, "
                              f"global batch {trainer.config['batch_size']}; pids of the ranks: {pids}")

    @contextmanager
    def guard(self):
        """An exception on this rank: one line on stderr naming the rank, its host and the cause,
        then ``MPI_Abort``, which ends every rank (none is left waiting in a collective)."""
        try:
            yield
        except BaseException as exc:
            sys.stderr.write(f"cnnrun: rank {self.rank} of {self.size} on {self.host} stopped the run: "
                             f"{describe(exc)}\n")
            sys.stderr.flush()
            self.comm.Abort(exit_status(exc))


def describe(exc: BaseException) -> str:
    """One line for an exception: cnnrun's own message, else its type, message and where it was raised."""
    if isinstance(exc, CnnrunError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGTERM)"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{where}"


def exit_status(exc: BaseException) -> int:
    """The exit status the job ends with: 128 + the signal for an interrupt, a SystemExit's code, else 1."""
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    signum = getattr(exc, "signal", None)
    if isinstance(signum, int):
        return 128 + signum
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


def set_threads(ranks_on_host: int, environ=None) -> int:
    """Numba's threads for one of ``ranks_on_host`` ranks on this host: the host's cores (this
    process's CPU affinity) shared out, at least 1; ``NUMBA_NUM_THREADS`` in the environment wins."""
    environ = os.environ if environ is None else environ
    import numba

    if "NUMBA_NUM_THREADS" not in environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, cores // ranks_on_host)))
    return numba.get_num_threads()


def bucket_gradients(net, bucket_bytes: int) -> list[np.ndarray]:
    """Move ``net.grads`` into flat buffers of about ``bucket_bytes`` each (the last layers first,
    the order backward fills them) and return those; each gradient array becomes a view of its
    bucket, so the layers' in-place writes land there and one Allreduce per bucket sums them."""
    buckets, group, size = [], [], 0
    for layer, name in [(node.name, name) for node in reversed(net.nodes) for name in net.grads.get(node.name, {})]:
        group.append((layer, name))
        size += net.grads[layer][name].nbytes
        if size >= bucket_bytes:
            buckets.append(_flatten(net.grads, group))
            group, size = [], 0
    if group:
        buckets.append(_flatten(net.grads, group))
    return buckets


def _flatten(grads: dict, group: list[tuple[str, str]]) -> np.ndarray:
    arrays = [grads[layer][name] for layer, name in group]
    flat = np.zeros(sum(a.size for a in arrays), arrays[0].dtype)
    offset = 0
    for (layer, name), array in zip(group, arrays):
        view = flat[offset:offset + array.size].reshape(array.shape)
        view[...] = array
        grads[layer][name] = view
        offset += array.size
    return flat
