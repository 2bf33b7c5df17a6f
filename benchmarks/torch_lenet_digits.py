"""Train examples/lenet_digits.json with cnnrun and the same network in PyTorch, on the same split.

Prints both runs' validation accuracy per epoch, so the README's claim ("what PyTorch reaches with
the same network, optimizer and split") can be checked on any machine. PyTorch is optional: install
the CPU build with ``pip install torch --index-url https://download.pytorch.org/whl/cpu``.

    python benchmarks/torch_lenet_digits.py
"""

from __future__ import annotations

import json
from pathlib import Path

from cnnrun.engine.data import batches, prepare_data
from cnnrun.engine.plugins import default_registries
from cnnrun.engine.schedules import lr_at
from cnnrun.engine.train import train
from cnnrun.engine.train_config import resolve_train_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lenet_digits.json"


def torch_run(config: dict) -> list[float]:
    import numpy as np
    import torch
    from torch import nn

    train_config = resolve_train_config(config["train"])
    train_set, validation, _, _ = prepare_data(
        train_config["data"], input_shape=(1, 28, 28), num_classes=10,
        validation_split=train_config["validation_split"], seed=train_config["seed"],
        registry=default_registries().data_sources, base_dir=EXAMPLE.parent)
    torch.manual_seed(train_config["seed"])
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    opt = train_config["optimizer"]
    sgd = torch.optim.SGD(model.parameters(), lr=opt["lr"], momentum=opt.get("momentum", 0),
                          weight_decay=opt.get("weight_decay", 0))
    rng = np.random.default_rng(train_config["seed"])
    epochs = train_config["epochs"]
    accuracies = []
    for epoch in range(1, epochs + 1):
        for group in sgd.param_groups:
            group["lr"] = lr_at(epoch, opt["lr"], train_config["schedule"], epochs)
        model.train()
        for x, y in batches(train_set, train_config["batch_size"], rng):
            sgd.zero_grad()
            loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
            loss.backward()
            sgd.step()
        model.eval()
        with torch.no_grad():
            predicted = model(torch.from_numpy(validation.x)).argmax(1).numpy()
        accuracies.append(float((predicted == validation.y).mean()))
    return accuracies


def main() -> None:
    config = json.loads(EXAMPLE.read_text())
    ours = [m["val_accuracy"] for m in train(EXAMPLE, out=Path("runs") / "compare-lenet-digits", force=True).metrics]
    theirs = torch_run(config)
    print("epoch  cnnrun  pytorch")
    for epoch, (a, b) in enumerate(zip(ours, theirs), start=1):
        print(f"{epoch:>5}  {a:.4f}  {b:.4f}")
    print(f" best  {max(ours):.4f}  {max(theirs):.4f}")


if __name__ == "__main__":
    main()
