"""TensorFlow Serving's REST API over a run's model, as a Starlette (ASGI) app.

    POST /v1/models/NAME:predict   {"instances": [...]} -> {"predictions": [...]}
                                   {"inputs": [...]}    -> {"outputs": [...]}
    GET  /v1/models/NAME           the model's status
    GET  /v1/models/NAME/metadata  the input signature (and trainctl's batching counters)
    GET  /healthz

So clients written for TF Serving work unchanged. Predictions are per sample the class
probabilities (softmax for cross_entropy, sigmoid for bce_with_logits) or the regression
values. A character language model (a run of the text data set) takes texts instead,
{"instances": ["And God said", ...], "top_k": 3}, and answers per text its likeliest next
characters with their probabilities and its perplexity (see `predict/text.py`).

Every bad request is a JSON `{"error": ...}` with 400 (malformed JSON, inputs of the wrong
shape or dtype, NaN, a character outside a language model's vocabulary), 404 (an unknown
model or path) or 413 (a body over the limit); none takes the server down.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from trainctl.errors import TrainctlError
from trainctl.predict.model import InputError, Predictor
from trainctl.predict.output import check_top_k, output_scores
from trainctl.predict.text import LanguageModel, is_text_run, language_model, next_character_records
from trainctl.serve.batching import Batcher

_TF_DTYPES = {"float16": "DT_HALF", "float32": "DT_FLOAT", "float64": "DT_DOUBLE",
              "int32": "DT_INT32", "int64": "DT_INT64"}  # fmt: skip


@dataclass(frozen=True)
class ServeOptions:
    model_name: str
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    batching: bool = True
    max_body_bytes: int = 16 << 20


def create_app(predictor: Predictor, options: ServeOptions) -> Starlette:
    """The app serving `predictor` under `options.model_name`; its batcher starts (and traces
    every bucket size) when the app starts, and finishes its queue when the app stops."""
    state: dict[str, Batcher] = {}
    text_model = language_model(predictor) if is_text_run(predictor) else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher = Batcher(
            predictor, options.max_batch_size, options.max_wait_ms / 1e3, options.batching
        )
        for size in batcher.buckets:  # compile now, not on the first request of each size
            predictor.forward(np.zeros((size, *predictor.input.shape), predictor.input.dtype))
        state["batcher"] = batcher
        try:
            yield
        finally:
            batcher.close()

    def model_name(name: str) -> None:
        if name != options.model_name:
            raise HTTPException(404, f"Servable not found for request: Latest({name})")

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def model(request: Request) -> JSONResponse:
        target = request.path_params["target"]
        if request.method == "GET":
            model_name(target)
            return JSONResponse(_status())
        name, _, verb = target.partition(":")
        model_name(name)
        if verb != "predict":
            raise HTTPException(404, f"unknown method {verb!r}: this server answers :predict")
        payload = json.loads(await _body(request, options.max_body_bytes) or b"null")
        if text_model is not None:
            return await _continue_texts(text_model, state["batcher"], payload)
        inputs, key = _inputs_of(payload)
        try:
            prepared = predictor.prepare(inputs, "request")
        except InputError as error:
            raise HTTPException(400, str(error)) from None
        outputs = await state["batcher"].run(prepared)
        if predictor.input.task == "classification":
            outputs = output_scores(outputs, predictor.loss)[0]
        return JSONResponse({key: outputs.tolist()})

    async def metadata(request: Request) -> JSONResponse:
        model_name(request.path_params["name"])
        batcher = state["batcher"]
        return JSONResponse(
            {
                "model_spec": {"name": options.model_name, "signature_name": "", "version": "1"},
                "metadata": {"signature_def": {"signature_def": {"serving_default": _signature(
                    predictor)}}},
                "trainctl": {
                    "run": str(predictor.run.path),
                    "checkpoint": str(predictor.restored.checkpoint.path),
                    "mode": predictor.mode,
                    "input": predictor.input.as_dict(),
                    "batching": {
                        "enabled": options.batching,
                        "max_batch_size": options.max_batch_size,
                        "max_wait_ms": options.max_wait_ms,
                        "bucket_sizes": batcher.buckets,
                        **batcher.stats.as_dict(),
                    },
                    "traces": predictor.traces,
                },
            }
        )  # fmt: skip

    return Starlette(
        routes=[
            Route("/healthz", health),
            Route("/v1/models/{name}/metadata", metadata),
            Route("/v1/models/{target}", model, methods=["GET", "POST"]),
        ],
        exception_handlers={
            HTTPException: _http_error,
            json.JSONDecodeError: _malformed,
            RecursionError: _malformed,
            UnicodeDecodeError: _malformed,
            Exception: _internal,
        },
        lifespan=lifespan,
    )


async def _body(request: Request, limit: int) -> bytes:
    """The request body; a 413 when it is over `limit` bytes. The rest of an oversized body
    is read and dropped (up to a bound) before the answer, since a server that closes on
    unread data resets the connection and the client never sees its 413."""
    body = bytearray()
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received <= limit:
            body += chunk
        elif received > 4 * limit + (1 << 20):
            break
    if received > limit:
        raise HTTPException(413, f"request body of {received}+ bytes is over the limit of {limit}")
    return bytes(body)


async def _continue_texts(model: LanguageModel, batcher: Batcher, payload: Any) -> JSONResponse:
    """A character language model's answer: per text (a string of the request) its likeliest
    next characters and its perplexity, the records of `trainctl predict` on a text file
    without their "sample"; "top_k" in the request asks for k characters (default 1)."""
    texts, key = _samples_of(payload)
    top_k = payload.get("top_k", 1)
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise HTTPException(400, "expected a non-empty list of texts (strings) to continue")
    try:
        if not isinstance(top_k, int) or isinstance(top_k, bool):
            raise InputError(f'"top_k": expected a whole number, found {top_k!r}')
        check_top_k(model.predictor.input, top_k)
        contexts = [model.encode(text, f"text {index}") for index, text in enumerate(texts)]
        prepared = model.predictor.prepare(model.windows(contexts)[0], "request")
    except TrainctlError as error:
        raise HTTPException(400, str(error)) from None
    outputs = await batcher.run(prepared)
    records = next_character_records(model, outputs, contexts, range(len(texts)), top_k)
    return JSONResponse({key: [{k: v for k, v in r.items() if k != "sample"} for r in records]})


def _samples_of(payload: Any) -> tuple[Any, str]:
    """What a request holds under "instances" (-> its answer's "predictions") or "inputs"
    (-> "outputs"), as TF Serving's row and columnar formats."""
    if not isinstance(payload, dict) or ("instances" in payload) == ("inputs" in payload):
        raise HTTPException(400, 'expected a JSON object with "instances" or "inputs"')
    if "instances" in payload:
        return payload["instances"], "predictions"
    return payload["inputs"], "outputs"


def _inputs_of(payload: Any) -> tuple[np.ndarray, str]:
    """The samples of a request and the key its answer goes under: "instances" (row format:
    a list of samples, each possibly {"NAME": sample}) -> "predictions"; "inputs" (columnar:
    the batch as one tensor) -> "outputs"."""
    samples, key = _samples_of(payload)
    if key == "predictions":
        if not isinstance(samples, list) or not samples:
            raise HTTPException(400, '"instances" must be a non-empty list of samples')
        if all(isinstance(s, dict) and len(s) == 1 for s in samples):
            samples = [next(iter(s.values())) for s in samples]
    elif isinstance(samples, dict) and len(samples) == 1:
        samples = next(iter(samples.values()))
    try:
        array = np.asarray(samples)
    except (ValueError, TypeError, OverflowError):
        message = "the samples are ragged: every one must have the same shape"
        raise HTTPException(400, message) from None
    if array.dtype.kind not in "biuf" or array.ndim == 0 or len(array) == 0:
        raise HTTPException(400, "expected a non-empty list of samples made of numbers")
    return array, key


def _status() -> dict[str, Any]:
    status = {"error_code": "OK", "error_message": ""}
    return {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": status}]}


def _tensor(name: str, dtype: np.dtype, shape: tuple[int, ...]) -> dict[str, Any]:
    dims = [{"size": "-1", "name": ""}, *({"size": str(d), "name": ""} for d in shape)]
    return {"dtype": _TF_DTYPES.get(str(dtype), "DT_INVALID"), "name": name,
            "tensor_shape": {"dim": dims, "unknown_rank": False}}  # fmt: skip


def _signature(predictor: Predictor) -> dict[str, Any]:
    described = predictor.input
    return {
        "inputs": {"inputs": _tensor("inputs", described.dtype, described.shape)},
        "outputs": {"outputs": _tensor("outputs", described.dtype, described.output_shape)},
        "method_name": "tensorflow/serving/predict",
    }


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"error": error.detail}, status_code=error.status_code)


async def _malformed(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"error": f"malformed JSON: {error}"}, status_code=400)


async def _internal(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"error": f"internal error: {error}"}, status_code=500)
