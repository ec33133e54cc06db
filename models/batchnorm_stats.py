"""Seeded BatchNorm running statistics for the CNN builders (ResNet, MobileNetV2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


def calibrate_batchnorm(
    model: "torch.nn.Module", *, seed: int, img_size: int, batches: int = 2, batch_size: int = 4
) -> None:
    """Set every BatchNorm2d's running statistics to their average over ``batches`` seeded
    standard-normal image batches run in train mode; leave ``model`` in eval mode.

    Default statistics (mean 0, var 1) would make BN folding numerically trivial; estimated
    ones keep activations normalised while making a folding bug show in the outputs. The
    stats are reset first, so calling it twice gives the same result.
    """
    import torch
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch_size, 3, img_size, img_size, generator=g))
    model.eval()
