"""Convolution: forward, and backward (input, weight and bias gradients), on the shapes of the
PyTorch comparison (benchmarks/compare_torch.py, docs/performance.md)."""

from . import OneLayer, parse_shape

CASES = {
    # case: (input N x C x H x W, layer options)
    "a": ("64x1x28x28", {"out_channels": 6, "kernel_size": 5, "padding": 2}),
    "b": ("64x6x14x14", {"out_channels": 16, "kernel_size": 5}),
    "c": ("32x64x56x56", {"out_channels": 64, "kernel_size": 3, "padding": 1}),
    "d": ("32x128x28x28", {"out_channels": 128, "kernel_size": 3, "padding": 1}),
    "e": ("32x256x28x28", {"out_channels": 64, "kernel_size": 1}),
    "f": ("32x64x56x56", {"out_channels": 64, "kernel_size": 3, "padding": 1, "groups": 64}),
    "g": ("32x64x56x56", {"out_channels": 64, "kernel_size": 3, "stride": 2, "padding": 1}),
    # beyond the PyTorch comparison: ResNet-20's Winograd stage 2, MobileNet-v1's depthwise convs
    "resnet20-stage2": ("32x32x16x16", {"out_channels": 32, "kernel_size": 3, "padding": 1}),
    "mobilenet-dw-s2": ("16x32x64x64", {"out_channels": 32, "kernel_size": 3, "stride": 2, "padding": 1,
                                        "groups": 32}),
    "mobilenet-dw-4x4": ("16x512x4x4", {"out_channels": 512, "kernel_size": 3, "padding": 1, "groups": 512}),
    # ResNet-20's first stage (Winograd since its transforms are vectors), MobileNet-v1's 8x8 pointwise
    "resnet20-stage1": ("32x16x32x32", {"out_channels": 16, "kernel_size": 3, "padding": 1}),
    "mobilenet-pw-8x8": ("16x256x8x8", {"out_channels": 256, "kernel_size": 1}),
    # ResNet-20's stride-2 transitions (im2col's rows of taps in vectors; the second's weight gradient
    # by channels-last patches) and its 64-channel 8x8 Winograd conv (V's planes off one L1 set)
    "resnet20-down-16": ("32x16x32x32", {"out_channels": 32, "kernel_size": 3, "stride": 2, "padding": 1}),
    "resnet20-down-32": ("32x32x16x16", {"out_channels": 64, "kernel_size": 3, "stride": 2, "padding": 1}),
    "resnet20-stage3": ("32x64x8x8", {"out_channels": 64, "kernel_size": 3, "padding": 1}),
}


class Conv2d:
    """conv2d, cases (a) to (g): (a)/(b) LeNet-5's two convolutions, (c)/(d) 3x3 ResNet
    convolutions, (e) a 1x1 (pointwise) one, (f) depthwise (groups = channels), (g) stride 2; then
    ResNet-20's 32-channel 16x16 conv (Winograd, blocks of 1024 tiles), two of MobileNet-v1's
    depthwise 3x3 convs (stride 2; 4x4 maps), ResNet-20's 16-channel 32x32 conv, MobileNet-v1's
    256-channel 8x8 pointwise conv, ResNet-20's two stride-2 3x3 convs and its 64-channel 8x8 conv."""

    params = [list(CASES)]
    param_names = ["case"]
    timeout = 300

    def setup(self, case):
        shape, options = CASES[case]
        self.op = OneLayer({"type": "conv2d", **options}, parse_shape(shape))

    def time_forward(self, case):
        self.op.forward()

    def time_backward(self, case):
        self.op.backward()

    def peakmem_forward_backward(self, case):
        self.op.forward()
        self.op.backward()
