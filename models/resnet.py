"""torchvision-style ResNet builders written out in code (no torchvision dependency).

Layout follows ``torchvision.models.resnet``: a 7x7/2 stem Conv-BN-ReLU and 3x3/2
MaxPool, four stages of BasicBlocks (ResNet-18/34) or Bottlenecks (ResNet-50/101, stride
on the 3x3 conv, "v1.5"), a 1x1 Conv-BN downsample branch where the shape changes,
global average pooling, Flatten and a Linear classifier.

BatchNorm running statistics are not left at their defaults (mean 0, var 1, which would
make BN folding numerically trivial): by default they are estimated from a few batches of
random input in train mode, so activations stay normalised and BN folding is exercised.

Shapes: input ``pixel_values`` float32 ``[B, 3, 224, 224]`` -> stem ``[B, 64, 56, 56]`` ->
stages at strides 4/8/16/32 (channels 64/128/256/512 x expansion, expansion 1 for
BasicBlock and 4 for Bottleneck) -> ``[B, 512*expansion, 7, 7]`` -> ``logits`` ``[B, num_classes]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from onnxpress.models.cnn_init import init_cnn

if TYPE_CHECKING:  # pragma: no cover
    import torch


def build_resnet(
    block: Literal["basic", "bottleneck"],
    layers: tuple[int, int, int, int],
    *,
    num_classes: int = 1000,
    seed: int = 0,
    calibrate_bn: bool = True,
    calib_img_size: int = 224,
) -> "torch.nn.Module":
    """Build a ResNet in eval mode with seeded weights (and BN stats, see module doc)."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        """3x3 Conv-BN-ReLU, 3x3 Conv-BN, + identity/downsample, ReLU."""

        expansion = 1

        def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class Bottleneck(nn.Module):
        """1x1 Conv-BN-ReLU, 3x3/stride Conv-BN-ReLU, 1x1 Conv-BN (x4), + identity, ReLU."""

        expansion = 4

        def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + identity)

    block_cls = BasicBlock if block == "basic" else Bottleneck

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(64, layers[0], 1)
            self.layer2 = self._make_layer(128, layers[1], 2)
            self.layer3 = self._make_layer(256, layers[2], 2)
            self.layer4 = self._make_layer(512, layers[3], 2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * block_cls.expansion, num_classes)

        def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
            downsample = None
            out_ch = planes * block_cls.expansion
            if stride != 1 or self.inplanes != out_ch:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
                )
            mods = [block_cls(self.inplanes, planes, stride, downsample)]
            self.inplanes = out_ch
            mods += [block_cls(out_ch, planes, 1, None) for _ in range(1, blocks)]
            return nn.Sequential(*mods)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(pixel_values))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(seed)
    return init_cnn(ResNet(), seed=seed, calibrate_bn=calibrate_bn,
                    calib_img_size=calib_img_size)


def resnet18(
    num_classes: int = 1000, *, seed: int = 0, calibrate_bn: bool = True
) -> "torch.nn.Module":
    """ResNet-18: BasicBlock x (2, 2, 2, 2); [B,3,224,224] -> [B,num_classes]."""
    return build_resnet(
        "basic", (2, 2, 2, 2), num_classes=num_classes, seed=seed, calibrate_bn=calibrate_bn
    )


def resnet50(
    num_classes: int = 1000, *, seed: int = 0, calibrate_bn: bool = True
) -> "torch.nn.Module":
    """ResNet-50: Bottleneck x (3, 4, 6, 3); [B,3,224,224] -> [B,2048,7,7] -> [B,num_classes]."""
    return build_resnet(
        "bottleneck", (3, 4, 6, 3), num_classes=num_classes, seed=seed, calibrate_bn=calibrate_bn
    )


def example_inputs(batch: int = 1, img_size: int = 224, *, seed: int = 0) -> tuple[Any, ...]:
    """``(pixel_values,)`` float32 ``[batch, 3, img_size, img_size]``, standard normal."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, img_size, img_size, generator=g),)
