"""Pooling: max and average over 2x2 windows, and global average pooling, forward and backward."""

from . import OneLayer, parse_shape

SHAPES = ["64x6x28x28", "32x64x56x56"]  # LeNet-5's first pooling; a ResNet stage


class _Pool:
    params = [SHAPES]
    param_names = ["shape"]
    layer: dict = {}

    def setup(self, shape):
        self.op = OneLayer(self.layer, parse_shape(shape))

    def time_forward(self, shape):
        self.op.forward()

    def time_backward(self, shape):
        self.op.backward()

    def peakmem_forward_backward(self, shape):
        self.op.forward()
        self.op.backward()


class MaxPool2d(_Pool):
    layer = {"type": "maxpool2d", "kernel_size": 2}


class AvgPool2d(_Pool):
    layer = {"type": "avgpool2d", "kernel_size": 2}


class GlobalAvgPool(_Pool):
    layer = {"type": "global_avgpool"}
