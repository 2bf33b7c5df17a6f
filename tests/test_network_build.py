"""Building a network costs time linear in its layers (a 40k-layer file once took 7.9 s: quadratic lookups)."""

import time

from cnnrun.engine import Network


def chain(n: int) -> dict:
    """``n`` layers, every other one a named linear layer (names take the duplicate check)."""
    layers = [{"type": "relu"} if i % 2 else {"name": f"fc{i}", "type": "linear", "out_features": 4}
              for i in range(n)]
    return {"name": "chain", "input": {"shape": [4]}, "layers": layers}


def build_seconds(config, registry) -> float:
    start = time.process_time()
    Network.from_config(config, registry=registry)
    return time.process_time() - start


def test_build_time_is_linear_in_the_number_of_layers(registry):
    small, large = chain(2_000), chain(20_000)
    build_seconds(small, registry)  # warm caches (imports, per-class key inspection)
    small_seconds = min(build_seconds(small, registry) for _ in range(3))
    large_seconds = build_seconds(large, registry)
    # 10x the layers: linear is ~10x; the old quadratic name check made it ~60x here
    assert large_seconds < 25 * small_seconds, (small_seconds, large_seconds)
