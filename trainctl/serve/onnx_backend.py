"""`trainctl serve --backend onnxruntime`: the run's exported ONNX model behind the same
server, so the load benchmark compares trainctl's graph mode with onnxruntime on one model.

The model is exported in memory as `trainctl export` writes it (normalize inside), so the
requests are only checked here, not transformed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainctl.export.onnx_export import onnx_model
from trainctl.predict.model import Predictor


class OnnxRuntimePredictor:
    """A Predictor whose forward is an onnxruntime session of the exported model."""

    mode = "onnxruntime"
    traces = 0

    def __init__(self, predictor: Predictor) -> None:
        import onnxruntime

        self.predictor = predictor
        model = onnx_model(predictor)
        self.session = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.predictor, name)  # input, loss, run, restored, check, ...

    def prepare(self, batch: np.ndarray, where: str = "the inputs", start: int = 0) -> np.ndarray:
        return self.predictor.validated(batch, where, start)

    def forward(self, prepared: np.ndarray) -> np.ndarray:
        return self.session.run(["outputs"], {"inputs": prepared})[0]
