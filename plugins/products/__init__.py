"""The matrix products the layer families share: :mod:`.cpu` (register-blocked Numba CPU products)
and :mod:`.cuda` (the tiled CUDA product)."""
