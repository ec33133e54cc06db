"""Train two small classifiers on scikit-learn's digits and export them to ONNX.

Run ``python -m onnxpress.models.train_digits [--model cnn|vit|all] [--epochs N]``. It writes
``digits_test.npz`` (the 450 test images), ``digits_validation.npz`` (134 training-split
images held out of training) and ``digits_calibration.npz`` (see
:mod:`onnxpress.models.digits_data`), and ``digits_cnn.onnx`` / ``digits_vit.onnx`` next to
this file, trained on the other 1213 images, and prints each model's top-1 accuracy on the
validation and test splits as ONNX Runtime computes it from the exported file.

Both models take ``image`` float32 ``[B, 1, 8, 8]`` (pixels / 16) and return ``logits``
float32 ``[B, 10]``; the batch axis is dynamic.

- ``cnn``: three Conv-BatchNorm-ReLU blocks (32, 64, 64 channels) with a MaxPool after the
  second, GlobalAveragePool, Dropout and a Linear head. The BatchNorm layers are kept in the
  file (the TorchScript exporter's default EVAL export would fold them into the Convs).
- ``vit``: nearest 4x upsampling to 32x32 in the model, then the timm-style ViT of
  :mod:`onnxpress.models.vit` (patch 4 -> 64 patches + CLS = 65 tokens, dim 64, depth 6,
  heads 4).

Training is deterministic (fixed seeds, 2 threads, deterministic algorithms, no data loader
workers), so a re-run writes the same weights and prints the same accuracies.
``--holdout`` trains as usual but writes nothing and reports PyTorch's accuracy on the
validation split only (for choosing hyper-parameters without looking at the test split).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onnxpress.models.digits_data import (
    TEST_NPZ,
    hold_out,
    load_split,
    write_calibration_npz,
    write_test_npz,
    write_validation_npz,
)
from onnxpress.models.export import export_onnx
from onnxpress.models.vit import ViTConfig, build_vit

HERE = Path(__file__).parent
SEED = 0
OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
DYNAMIC_AXES = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimiser and augmentation settings (AdamW, linear warm-up then cosine decay)."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int = 64
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    shift_prob: float = 0.5  # chance per image of a random 1-pixel shift
    erase_prob: float = 0.0  # chance per image of zeroing a random 1x1..3x3 patch


# Chosen with --holdout (and 5-fold cross-validation on the training split for the CNN),
# not on the test split. Shifts slightly hurt the CNN in cross-validation (the digits are
# centred), hence the low shift_prob; the ViT, with no built-in translation invariance,
# gets more augmentation.
RECIPES = {
    "cnn": TrainConfig(epochs=60, lr=3e-3, weight_decay=1e-2, warmup_epochs=2, shift_prob=0.25),
    "vit": TrainConfig(
        epochs=100, lr=1e-3, weight_decay=5e-2, warmup_epochs=10, shift_prob=0.5, erase_prob=0.25
    ),
}
VIT_CONFIG = ViTConfig(img_size=32, patch=4, in_chans=1, dim=64, depth=6, heads=4, num_classes=10)


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    """Conv(3x3, padding 1) -> BatchNorm -> ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


class DigitsCNN(nn.Module):
    """``[B, 1, 8, 8]`` -> 32ch 8x8 -> 64ch 8x8 -> MaxPool 4x4 -> 64ch 4x4 -> GAP -> ``[B, 10]``."""

    def __init__(self, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(1, 32),
            *_conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
            *_conv_bn_relu(64, 64),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(64, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(image)))


class DigitsViT(nn.Module):
    """Nearest 4x upsampling ``[B, 1, 8, 8]`` -> ``[B, 1, 32, 32]``, then a ViT -> ``[B, 10]``.

    With patch 4 each patch is one upsampled source pixel, so the 64 patch tokens are the
    64 pixels of the digit. A patch token then says only how dark its pixel is, so where it
    is comes from the position embedding alone: it starts from a 2-D sine-cosine embedding
    (still learned) instead of ``build_vit``'s N(0, 0.02), which training takes long to grow.
    """

    def __init__(self, cfg: ViTConfig = VIT_CONFIG, seed: int = SEED) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=cfg.img_size // 8, mode="nearest")
        self.vit = build_vit(cfg, seed=seed)
        grid = cfg.img_size // cfg.patch
        with torch.no_grad():
            self.vit.pos_embed[0, 1:] = sincos_2d(grid, cfg.dim)
            self.vit.pos_embed[0, :1] = 0.0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vit(self.upsample(image))


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """MAE-style fixed 2-D sine-cosine position embedding ``[grid * grid, dim]`` (row-major
    patches): half of the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"dim {dim} is not divisible by 4")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, dtype=torch.float64)[:, None] * freqs  # [grid, dim / 4]
    axis = torch.cat([pos.sin(), pos.cos()], dim=1)  # [grid, dim / 2]
    rows = axis[:, None, :].expand(grid, grid, -1)
    cols = axis[None, :, :].expand(grid, grid, -1)
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, dim).float()


def build_model(name: str, seed: int = SEED) -> nn.Module:
    """A freshly initialised (seeded) ``cnn`` or ``vit``."""
    torch.manual_seed(seed)
    if name == "cnn":
        return DigitsCNN()
    if name == "vit":
        return DigitsViT(seed=seed)
    raise ValueError(f"unknown model {name!r} (cnn or vit)")


def set_determinism(seed: int = SEED, threads: int = 2) -> bool:
    """Seed torch and numpy, fix the thread count; return whether deterministic mode is on."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    try:
        torch.use_deterministic_algorithms(True)
    except RuntimeError:  # pragma: no cover - CPU builds support it
        return False
    return True


def random_shift(
    x: torch.Tensor, gen: torch.Generator, prob: float = 1.0, max_shift: int = 1
) -> torch.Tensor:
    """With probability ``prob`` per image, shift it by a random offset in
    ``[-max_shift, max_shift]`` per axis, filling with zeros (zero-pad, crop back)."""
    b, c, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b, 1), generator=gen)
    keep = torch.rand(b, 1, generator=gen) >= prob
    dy, dx = dy.masked_fill(keep, max_shift), dx.masked_fill(keep, max_shift)
    rows = (dy + torch.arange(h))[:, None, :, None]  # [B, 1, h, 1]
    cols = (dx + torch.arange(w))[:, None, None, :]  # [B, 1, 1, w]
    batch = torch.arange(b)[:, None, None, None]
    chans = torch.arange(c)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_erase(x: torch.Tensor, gen: torch.Generator, prob: float) -> torch.Tensor:
    """Zero a random ``s x s`` square (``s`` in 1..3) in each image with probability ``prob``."""
    if prob <= 0:
        return x
    b, _, h, w = x.shape
    size = torch.randint(1, 4, (b, 1, 1), generator=gen)
    top = (torch.rand(b, 1, 1, generator=gen) * (h - size + 1)).long()
    left = (torch.rand(b, 1, 1, generator=gen) * (w - size + 1)).long()
    ys = torch.arange(h)[None, :, None]
    xs = torch.arange(w)[None, None, :]
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    chosen = torch.rand(b, 1, 1, generator=gen) < prob
    return x.masked_fill((inside & chosen)[:, None], 0.0)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and kernels only (not biases, norms, CLS or position tokens)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed"))
        (no_decay if skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Step -> LR factor: linear warm-up over ``warmup_epochs``, then cosine decay to 0."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, seed: int = SEED
) -> nn.Module:
    """Train ``model`` in place on images ``x`` ``[N, 1, 8, 8]`` and labels ``y``; return it in
    eval mode. Shuffling and augmentation draw from one generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    steps = math.ceil(len(images) / cfg.batch_size)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            batch = random_shift(images[idx], gen, cfg.shift_prob)
            batch = random_erase(batch, gen, cfg.erase_prob)
            loss = loss_fn(model(batch), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``model``'s logits (eval mode) on ``x``, as float32 numpy ``[N, 10]``."""
    model.eval()
    parts = [model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(parts).numpy()


def export(model: nn.Module, path: Path, example: np.ndarray) -> Path:
    """Export ``model`` (TorchScript exporter, opset 17, dynamic batch) to ``path``.

    Models without BatchNorm go through :func:`~onnxpress.models.export.export_onnx`. That
    exports in EVAL mode with constant folding, whose peephole pass folds BatchNorm into the
    preceding Conv; models with BatchNorm are therefore exported with the same settings but
    ``do_constant_folding=False``, which keeps each ``BatchNormalization`` node.
    """
    model = model.eval()
    inputs = (torch.from_numpy(example),)
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        export_onnx(
            model,
            inputs,
            path,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=DYNAMIC_AXES,
            exporter="torchscript",
            opset=OPSET,
        )
        return path
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy-exporter DeprecationWarning: the TorchScript exporter is intended here.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            inputs,
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=DYNAMIC_AXES,
            opset_version=OPSET,
            do_constant_folding=False,
            dynamo=False,
        )
    return path


def ort_logits(path: Path, x: np.ndarray, threads: int = 2) -> np.ndarray:
    """Logits of the ONNX file at ``path`` on ``x`` with ONNX Runtime (CPU), after
    ``onnx.checker`` has accepted the file."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


@dataclasses.dataclass
class Result:
    """One trained and exported model: where it is and how it did."""

    name: str
    path: Path | None
    accuracy: float  # on the test split (ONNX Runtime); with --holdout: validation, PyTorch
    validation_accuracy: float
    max_abs_diff: float
    train_seconds: float
    parameters: int


def run(
    name: str, cfg: TrainConfig, data: tuple[np.ndarray, ...], *, holdout: bool = False
) -> Result:
    """Train ``name`` on the training split of ``data = (x_train, y_train, x_test, y_test)``
    less its validation tenth (:func:`hold_out`).

    Normally: export to ``digits_<name>.onnx`` and score the file with ONNX Runtime on the
    validation and test splits, checking that its logits match PyTorch's within 1e-4. With
    ``holdout``: score PyTorch on the validation split only, and write nothing.
    """
    x_train, y_train, x_test, y_test = data
    x_fit, y_fit, x_val, y_val = hold_out(x_train, y_train, SEED)
    model = build_model(name)
    parameters = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    train(model, x_fit, y_fit, cfg)
    seconds = time.perf_counter() - start
    if holdout:
        accuracy = float((torch_logits(model, x_val).argmax(1) == y_val).mean())
        return Result(name, None, accuracy, accuracy, 0.0, seconds, parameters)
    path = export(model, HERE / f"digits_{name}.onnx", x_test[:2])
    scores = []
    diff = 0.0
    for x, y in ((x_val, y_val), (x_test, y_test)):
        logits = ort_logits(path, x)
        diff = max(diff, float(np.abs(logits - torch_logits(model, x)).max()))
        scores.append(float((logits.argmax(1) == y).mean()))
    if diff > 1e-4:
        raise RuntimeError(f"{path.name}: ONNX Runtime logits differ from PyTorch by {diff:.2e}")
    return Result(name, path, scores[1], scores[0], diff, seconds, parameters)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m onnxpress.models.train_digits", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", choices=["cnn", "vit", "all"], default="all")
    parser.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    parser.add_argument(
        "--holdout",
        action="store_true",
        help="score on the validation split only (PyTorch); write no files",
    )
    args = parser.parse_args(argv)
    deterministic = set_determinism()
    data = load_split(SEED)
    print(
        f"digits: {len(data[0])} train ({len(data[0]) // 10} of them held out for "
        f"validation) / {len(data[2])} test images; deterministic algorithms: {deterministic}"
    )
    if not args.holdout:
        print(f"wrote {write_test_npz(TEST_NPZ, SEED)}")
        print(f"wrote {write_validation_npz(seed=SEED)}")
        print(f"wrote {write_calibration_npz(seed=SEED)}")
    for name in ["cnn", "vit"] if args.model == "all" else [args.model]:
        cfg = RECIPES[name]
        if args.epochs is not None:
            cfg = dataclasses.replace(cfg, epochs=args.epochs)
        r = run(name, cfg, data, holdout=args.holdout)
        print(f"{name}: {r.parameters} parameters, {cfg.epochs} epochs in {r.train_seconds:.0f} s; "
              + ("validation accuracy (PyTorch) " + f"{r.accuracy:.4f}" if args.holdout else
                 f"validation {r.validation_accuracy:.4f}, test {r.accuracy:.4f} (ONNX Runtime)"))
        if r.path is not None:
            print(
                f"  wrote {r.path} ({r.path.stat().st_size} bytes); "
                f"max |ORT - PyTorch| = {r.max_abs_diff:.1e}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
