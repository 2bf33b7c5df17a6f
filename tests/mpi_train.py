"""Run by tests/test_distributed.py under ``mpiexec -n N``: one training run through
``cnnrun.engine.train.train``, checking after every step that every rank holds the same weights.

``python mpi_train.py NET.json OUT [--epochs E] [--resume PATH] [--fail KIND:RANK:EPOCH:BATCH]``:
rank 0 writes ``OUT/checks.json`` (the number of steps checked); ``--fail kill:1:2:5`` has rank 1
kill itself (SIGKILL) after batch 5 of epoch 2, ``raise:...`` raise a RuntimeError there.
"""

import argparse
import hashlib
import json
import os
import signal
from pathlib import Path

from mpi4py import MPI

import cnnrun.engine.train as training
from cnnrun.engine.progress import Reporter


class CheckingTrainer(training.Trainer):
    """A Trainer whose network the reporter can see."""

    def __init__(self, net, *args, **kwargs):
        super().__init__(net, *args, **kwargs)
        CheckingReporter.net = net


class CheckingReporter(Reporter):
    net = None

    def __init__(self, fail):
        self.checks, self.epoch = 0, 0
        self.fail = fail

    def epoch_start(self, epoch, epochs, batches):
        self.epoch = epoch

    def batch_end(self, batch, samples, running_loss):
        digest = hashlib.sha256()
        for layer in sorted(self.net.params):
            for name in sorted(self.net.params[layer]):
                digest.update(self.net.params[layer][name].tobytes())
        digests = MPI.COMM_WORLD.allgather(digest.hexdigest())
        assert len(set(digests)) == 1, f"weights differ between ranks after epoch {self.epoch} batch {batch}"
        self.checks += 1
        if self.fail and (MPI.COMM_WORLD.rank, self.epoch, batch) == self.fail[1:]:
            if self.fail[0] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"planned failure at epoch {self.epoch} batch {batch}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("net")
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--fail")
    args = parser.parse_args()
    fail = None
    if args.fail:
        kind, *numbers = args.fail.split(":")
        fail = (kind, *map(int, numbers))
    training.Trainer = CheckingTrainer
    reporter = CheckingReporter(fail)
    overrides = {"epochs": args.epochs} if args.epochs else None
    training.train(args.net, overrides=overrides, out=args.out, resume=args.resume, reporter=reporter)
    if MPI.COMM_WORLD.rank == 0:
        Path(args.out, "checks.json").write_text(json.dumps({"steps": reporter.checks}))


if __name__ == "__main__":
    main()
