"""cnnrun: a light, hackable convolutional-neural-network engine with Numba kernels."""

__version__ = "0.1.0"
