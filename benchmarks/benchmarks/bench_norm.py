"""Batch normalization in training mode (batch statistics), forward and backward."""

from . import OneLayer, parse_shape


class BatchNorm:
    params = [["64x16x10x10", "32x64x56x56"]]
    param_names = ["shape"]

    def setup(self, shape):
        self.op = OneLayer({"type": "batchnorm"}, parse_shape(shape))

    def time_forward(self, shape):
        self.op.forward()

    def time_backward(self, shape):
        self.op.backward()

    def peakmem_forward_backward(self, shape):
        self.op.forward()
        self.op.backward()
