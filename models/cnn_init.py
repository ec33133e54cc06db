"""Seeded weights and BatchNorm running statistics for the CNN builders (ResNet, MobileNetV2)."""

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


def init_cnn(
    model: "torch.nn.Module", *, seed: int, calibrate_bn: bool, calib_img_size: int,
    linear_std: float | None = None,
) -> "torch.nn.Module":
    """torchvision's init (Kaiming fan-out Convs), non-trivial BatchNorm affine parameters,
    ``Linear`` weights ~ N(0, ``linear_std``) with zero bias when given (else PyTorch's
    default), then estimated BN statistics (``calibrate_batchnorm``, seed + 1); eval mode.

    The caller seeds torch before building the module, so construction and init share one
    random stream."""
    import torch
    from torch import nn

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
            elif isinstance(m, nn.Linear) and linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
                nn.init.zeros_(m.bias)
    if calibrate_bn:
        calibrate_batchnorm(model, seed=seed + 1, img_size=calib_img_size)
    return model.eval()
