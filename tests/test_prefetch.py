"""Prefetching changes when batches are loaded, never what they are."""

import copy
import threading
import time

import numpy as np
import pytest

from cnnrun.engine import prefetch
from cnnrun.engine.plugins import Registries, make_plugin_manager
from cnnrun.engine.prefetch import DataWait, Prefetcher, prefetched
from cnnrun.engine.train import train


def draws(rng, n):
    for _ in range(n):
        yield rng.permutation(5), rng.random(3)


def test_the_same_items_in_the_same_order_and_the_same_generator_state_after():
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    fetched, plain = list(prefetched(draws(a, 20))), list(draws(b, 20))
    assert len(fetched) == 20
    for (p, r), (q, s) in zip(fetched, plain):
        np.testing.assert_array_equal(p, q)
        np.testing.assert_array_equal(r, s)
    assert a.bit_generator.state == b.bit_generator.state


def test_the_worker_runs_ahead_of_the_consumer():
    second_made = threading.Event()

    def items():
        yield 0
        yield 1
        second_made.set()
        yield 2

    loader = prefetched(items())
    assert next(loader) == 0
    assert second_made.wait(timeout=10)  # made while the consumer had not asked for it
    assert list(loader) == [1, 2]


def test_an_error_in_the_worker_is_raised_at_its_item():
    def items():
        yield 1
        yield 2
        raise ValueError("bad batch 3")

    seen = []
    with pytest.raises(ValueError, match="bad batch 3"):
        for item in prefetched(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_stopping_early_stops_the_worker():
    def endless():
        k = 0
        while True:
            yield k
            k += 1

    prefetcher = Prefetcher(endless(), depth=2)
    assert [next(prefetcher) for _ in range(3)] == [0, 1, 2]
    prefetcher.close()
    assert not prefetcher.worker.is_alive()
    loader = prefetched(endless())
    next(loader)
    loader.close()
    assert not any(t.name == "cnnrun-prefetch" and t.is_alive() for t in threading.enumerate())


def test_training_on_lazy_images_with_augmentation_gives_the_same_run_with_and_without(tmp_path, monkeypatch):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(3):
        for k in range(8):
            pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            pixels[:, :, label] = 255  # a class you can learn
            (tmp_path / "data" / f"c{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / "data" / f"c{label}" / f"{k}.png")
    net = {"name": "tiny", "input": {"shape": [3, 8, 8]},
           "layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, {"type": "relu"},
                      {"type": "flatten"}, {"type": "linear", "out_features": 3}],
           "train": {"data": {"type": "image_folder", "path": str(tmp_path / "data"), "cache_mb": 0},
                     "augment": [{"type": "random_crop", "padding": 2}, {"type": "horizontal_flip"}],
                     "optimizer": {"type": "sgd", "lr": 0.1}, "epochs": 3, "batch_size": 5}}
    registries = Registries.from_plugin_manager(make_plugin_manager(load_entrypoints=False))
    made = []
    original = Prefetcher.__init__

    def counting(self, *args, **kwargs):
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Prefetcher, "__init__", counting)
    ahead = train(copy.deepcopy(net), out=tmp_path / "ahead", registries=registries)
    assert len(made) == 3  # one worker an epoch
    monkeypatch.setattr(prefetch, "PREFETCH_DEPTH", 0)
    inline = train(copy.deepcopy(net), out=tmp_path / "inline", registries=registries)
    assert len(made) == 3
    timing = ("seconds", "samples_per_second")
    assert [{k: v for k, v in m.items() if k not in timing} for m in ahead.metrics] == \
           [{k: v for k, v in m.items() if k not in timing} for m in inline.metrics]
    for layer, params in ahead.network.params.items():
        for name, value in params.items():
            np.testing.assert_array_equal(inline.network.params[layer][name], value)


@pytest.mark.parametrize("depth", [0, 2])
def test_the_time_spent_waiting_for_slow_items_is_counted(depth):
    def slow():
        for k in range(3):
            time.sleep(0.05)
            yield k

    wait = DataWait()
    assert list(prefetched(slow(), depth, wait)) == [0, 1, 2]
    assert 0.1 <= wait.seconds  # the consumer asked at once for each item: it waited about 0.15 s
