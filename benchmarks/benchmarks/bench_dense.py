"""The linear layer, forward and backward (the register-blocked products of plugins/products)."""

from . import OneLayer

SIZES = {"64x400->120": (64, 400, 120), "256x2048->1000": (256, 2048, 1000)}  # LeNet-5's fc1; a classifier


class Linear:
    params = [list(SIZES)]
    param_names = ["size"]

    def setup(self, size):
        batch, features, out = SIZES[size]
        self.op = OneLayer({"type": "linear", "out_features": out}, (batch, features))

    def time_forward(self, size):
        self.op.forward()

    def time_backward(self, size):
        self.op.backward()

    def peakmem_forward_backward(self, size):
        self.op.forward()
        self.op.backward()
