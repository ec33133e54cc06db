"""Realistic inputs for the corpus, made here from things that ship: text lines and pages
drawn with the handwritten digits of ``models/digits_test.npz``, detector scenes of such
text and coloured blocks, speech-like audio (voiced harmonics under syllable envelopes,
with pauses), and the bytes of real files of Python's standard library for the file-type
classifier. Each recipe gives ``{input name: array}`` with samples on each input's own
sample axis (``backends.inputs``), preprocessed as the model's own package does.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Callable
from pathlib import Path

import numpy as np

from onnxpress.models.digits_data import TEST_NPZ

Arrays = dict[str, np.ndarray]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


def _glyphs() -> np.ndarray:
    with np.load(TEST_NPZ) as data:
        images = data["image"]
    return images.reshape(len(images), 8, 8) * 16  # 0..16, ink high


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D array."""
    h, w = image.shape
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx
    bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def text_line(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Dark handwritten digits on paper, 0..255 grey, ``height`` x ``width``."""
    glyphs = _glyphs()
    count = max(2, width // height)
    picks = glyphs[rng.integers(0, len(glyphs), count)]
    line = np.concatenate([np.pad(g, ((0, 0), (1, 1))) for g in picks], axis=1)
    ink = _resize(line / 16.0, height, width)
    paper = 235 + rng.normal(0, 6, (height, width))
    return np.clip(paper - ink * rng.uniform(150, 210), 0, 255)


def scene(rng: np.random.Generator, size: int, background: float = 200.0) -> np.ndarray:
    """A 3 x size x size picture: blocks of colour and a few lines of text, 0..255."""
    image = np.full((3, size, size), background, np.float64)
    image += rng.normal(0, 4, image.shape)
    for _ in range(rng.integers(3, 7)):
        h, w = rng.integers(size // 10, size // 3, 2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        image[:, y:y + h, x:x + w] = rng.uniform(20, 235, (3, 1, 1))
    for _ in range(rng.integers(2, 5)):
        h = int(rng.integers(size // 20, size // 8))
        w = int(min(size - 1, h * rng.integers(4, 9)))
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        image[:, y:y + h, x:x + w] = text_line(rng, h, w)[None]
    return np.clip(image, 0, 255)


def _paddle_text(height: int, width: int, flip: bool) -> Callable[[int], Arrays]:
    def make(count: int) -> Arrays:
        rng = np.random.default_rng(0)
        lines = []
        for index in range(count):
            grey = text_line(rng, height, width)
            if flip and index % 2:
                grey = grey[::-1, ::-1]  # the classifier tells 0 from 180 degrees
            lines.append(np.repeat(grey[None], 3, 0))
        x = (np.stack(lines).astype(np.float32) / 255 - 0.5) / 0.5
        return {"x": x}
    return make


def paddle_det(count: int) -> Arrays:
    rng = np.random.default_rng(0)
    pages = np.stack([scene(rng, 320, background=235) for _ in range(count)]) / 255
    return {"x": ((pages - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)}


def dddd_rec(count: int) -> Arrays:
    """ddddocr: grey, height 64, x / 255 then (x - 0.5) / 0.5; one image a call."""
    rng = np.random.default_rng(0)
    lines = [text_line(rng, 64, 192) for _ in range(count)]
    x = (np.stack(lines)[:, None, None].astype(np.float32) / 255 - 0.5) / 0.5
    return {"input1": x}  # [count, 1, 1, 64, 192]: a stack of single-image feeds


def yolox(count: int) -> Arrays:
    """YOLOX as ddddocr feeds it: raw 0..255 pixels, grey 114 padding."""
    rng = np.random.default_rng(0)
    images = np.stack([scene(rng, 416, background=114) for _ in range(count)])
    return {"images": images[:, None].astype(np.float32)}  # a stack: the batch is fixed at 1


def yolov8(count: int) -> Arrays:
    rng = np.random.default_rng(0)
    images = np.stack([scene(rng, 320) for _ in range(count)]) / 255
    return {"images": images.astype(np.float32)}


def vad(count: int, rate: int = 16000) -> Arrays:
    """Speech-like audio in 512-sample windows: a voiced source (harmonics of a gliding
    pitch) under syllable envelopes, with pauses; state zeros, sr the scalar rate."""
    rng = np.random.default_rng(0)
    t = np.arange(count * 512) / rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None) ** 2
    pauses = (np.sin(2 * np.pi * 0.45 * t) > -0.3).astype(float)
    audio = 0.2 * voiced * syllables * pauses + rng.normal(0, 0.003, t.shape)
    return {"input": audio.reshape(count, 512).astype(np.float32),
            "state": np.zeros((2, count, 128), np.float32), "sr": np.array(rate)}


def magika(count: int) -> Arrays:
    """Magika's features from real files of Python's standard library and C headers: the
    first and last 1024 bytes (leading/trailing whitespace stripped), padded with the token
    256. Not site-packages: what is installed there differs between a developer's
    environment and CI's, and so would the files drawn and the numbers they give."""
    paths = sysconfig.get_paths()
    roots = [Path(paths["stdlib"]), Path(paths["include"])]
    files = sorted(p for root in roots for p in root.rglob("*") if p.is_file()
                   and "site-packages" not in p.parts
                   and p.suffix in (".py", ".so", ".txt", ".json", ".pyi", ".h", ".cfg"))
    picks = [files[i] for i in np.random.default_rng(0).choice(len(files), count,
                                                               replace=False)]
    rows = []
    for path in picks:
        data = path.read_bytes().strip()
        begin = np.full(1024, 256, np.int32)
        end = np.full(1024, 256, np.int32)
        head, tail = data[:1024], data[-1024:]
        begin[:len(head)] = np.frombuffer(head, np.uint8)
        end[1024 - len(tail):] = np.frombuffer(tail, np.uint8)
        rows.append(np.concatenate([begin, end]))
    return {"bytes": np.stack(rows)}


RECIPES: dict[str, Callable[[int], Arrays]] = {
    "paddle_cls": _paddle_text(48, 192, flip=True),
    "paddle_rec": _paddle_text(48, 320, flip=False),
    "paddle_det": paddle_det,
    "dddd_rec": dddd_rec,
    "yolox": yolox,
    "yolov8": yolov8,
    "vad": vad,
    "magika": magika,
}
