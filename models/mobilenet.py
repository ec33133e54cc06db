"""torchvision-style MobileNetV2 builder written out in code (no torchvision dependency).

Layout follows ``torchvision.models.mobilenetv2``: a 3x3/2 stem Conv-BN-ReLU6 to 32
channels, then the inverted-residual table ``(t, c, n, s)`` below (the first block of each
row has stride ``s``, the rest stride 1). An inverted residual is a 1x1 expand Conv-BN-ReLU6
to ``t * in`` channels (skipped when ``t == 1``), a 3x3 depthwise Conv-BN-ReLU6 and a 1x1
project Conv-BN with no activation ("linear bottleneck"), plus the input when the stride
is 1 and the channel count is unchanged. A 1x1 Conv-BN-ReLU6 to 1280 channels, global
average pooling, Dropout(0.2) (a no-op in eval) and a Linear classifier follow. Channel
counts are scaled by ``width_mult`` and rounded to multiples of 8 (``_make_divisible``).

As in resnet.py, BatchNorm running statistics are estimated from a few batches of random
input in train mode rather than left at mean 0 / var 1 (``calibrate_batchnorm``), so BN
folding is exercised.

Shapes (width 1.0): input ``pixel_values`` float32 ``[B, 3, 224, 224]`` -> stem
``[B, 32, 112, 112]`` -> ``[B, 320, 7, 7]`` -> ``[B, 1280, 7, 7]`` -> ``logits``
``[B, num_classes]``; about 3.5M parameters with 1000 classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxpress.models.cnn_init import init_cnn

if TYPE_CHECKING:  # pragma: no cover
    import torch

INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    # t (expansion), c (output channels), n (repeats), s (stride of the first repeat)
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor`` without going more than 10% below it
    (torchvision's rule, so that scaled widths match its checkpoints)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def build_mobilenet_v2(
    width_mult: float = 1.0,
    num_classes: int = 1000,
    *,
    seed: int = 0,
    calibrate_bn: bool = True,
    calib_img_size: int = 224,
) -> "torch.nn.Module":
    """Build a MobileNetV2 in eval mode with seeded weights (and BN stats, see module doc)."""
    import torch
    from torch import nn

    def conv_bn(
        inp: int, out: int, kernel: int, stride: int = 1, groups: int = 1, relu6: bool = True
    ) -> nn.Sequential:
        """Conv (no bias, "same" padding) -> BN [-> ReLU6]: torchvision's Conv2dNormActivation."""
        layers: list[nn.Module] = [
            nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
        ]
        if relu6:
            layers.append(nn.ReLU6(inplace=True))
        return nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        """[expand 1x1 ->] depthwise 3x3/stride -> linear project 1x1 (+ input if shapes match)."""

        def __init__(self, inp: int, out: int, stride: int, expand_ratio: int):
            super().__init__()
            hidden = int(round(inp * expand_ratio))
            self.use_res_connect = stride == 1 and inp == out
            layers: list[nn.Module] = []
            if expand_ratio != 1:
                layers.append(conv_bn(inp, hidden, 1))
            layers += [
                conv_bn(hidden, hidden, 3, stride, groups=hidden),
                conv_bn(hidden, out, 1, relu6=False),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            inp = _make_divisible(32 * width_mult)
            last = _make_divisible(1280 * max(1.0, width_mult))
            features: list[nn.Module] = [conv_bn(3, inp, 3, 2)]
            for t, c, n, s in INVERTED_RESIDUAL_SETTING:
                out = _make_divisible(c * width_mult)
                for i in range(n):
                    features.append(InvertedResidual(inp, out, s if i == 0 else 1, t))
                    inp = out
            features.append(conv_bn(inp, last, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(last, num_classes))

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            x = nn.functional.adaptive_avg_pool2d(self.features(pixel_values), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    torch.manual_seed(seed)
    return init_cnn(MobileNetV2(), seed=seed, calibrate_bn=calibrate_bn,
                    calib_img_size=calib_img_size, linear_std=0.01)


def mobilenet_v2(
    num_classes: int = 1000, *, seed: int = 0, calibrate_bn: bool = True
) -> "torch.nn.Module":
    """MobileNetV2, width 1.0: [B,3,224,224] -> [B,1280,7,7] -> [B,num_classes]; ~3.5M params."""
    return build_mobilenet_v2(1.0, num_classes, seed=seed, calibrate_bn=calibrate_bn)
