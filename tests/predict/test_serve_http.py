"""`trainctl serve` over real HTTP on a free loopback port: TF Serving's request and response
shapes, correct predictions, every bad request answered with a JSON error (the server stays
up), concurrent requests batched, bucket sizes compiled once, and SIGTERM draining the
requests in flight. (Here rather than in tests/serve/ to share the runs trained for predict.)"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import trainctl
from trainctl.predict.output import output_scores

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from trainctl.serve.app import ServeOptions, create_app  # noqa: E402
from trainctl.serve.batching import bucket_sizes  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(predictor, **options):
    """The app on uvicorn in a thread; yields its base URL."""
    port = free_port()
    app = create_app(predictor, ServeOptions("model", **options))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def call(url, body=None, raw=None, method=None):
    """(status, JSON answer) of one request; `body` is sent as JSON, `raw` as bytes."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def npz_model(npz_run):
    return trainctl.load(npz_run, overrides=["mode=graph"])


@pytest.fixture(scope="module")
def server(npz_model):
    with running(npz_model, max_batch_size=8, max_wait_ms=1.0, max_body_bytes=1 << 16) as url:
        yield url


def samples(count, seed=0):
    return np.random.default_rng(seed).normal(size=(count, 5)).astype(np.float32)


def test_predictions_in_tf_servings_shapes(server, npz_model):
    x = samples(5)
    expected = output_scores(npz_model.predict(x), "cross_entropy")[0]
    status, answer = call(f"{server}/v1/models/model:predict", {"instances": x.tolist()})
    assert status == 200 and list(answer) == ["predictions"]
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-5, atol=1e-7)
    status, answer = call(f"{server}/v1/models/model:predict", {"inputs": x.tolist()})
    assert status == 200 and list(answer) == ["outputs"]
    np.testing.assert_allclose(answer["outputs"], expected, rtol=1e-5, atol=1e-7)
    named = {"instances": [{"inputs": row} for row in x.tolist()], "signature_name": ""}
    status, answer = call(f"{server}/v1/models/model:predict", named)
    assert status == 200
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-5, atol=1e-7)


def test_a_request_over_the_batch_size_runs_in_chunks(server, npz_model):
    x = samples(20, seed=5)  # the server's batches hold 8: chunks of 8, 8 and 4 (bucket 4)
    status, answer = call(f"{server}/v1/models/model:predict", {"instances": x.tolist()})
    expected = output_scores(npz_model.predict(x), "cross_entropy")[0]
    assert status == 200
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-5, atol=1e-7)


def test_bucket_sizes():
    assert bucket_sizes(1) == [1] and bucket_sizes(8) == [1, 2, 4, 8]
    assert bucket_sizes(24) == [1, 2, 4, 8, 16, 24]


def test_status_metadata_and_health(server):
    assert call(f"{server}/healthz") == (200, {"status": "ok"})
    status, answer = call(f"{server}/v1/models/model")
    assert status == 200 and answer["model_version_status"][0]["state"] == "AVAILABLE"
    status, answer = call(f"{server}/v1/models/model/metadata")
    signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    inputs = signature["inputs"]["inputs"]
    assert status == 200 and inputs["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in inputs["tensor_shape"]["dim"]] == ["-1", "5"]
    assert answer["trainctl"]["input"]["class_names"] == ["0", "1", "2", "3"]
    assert answer["trainctl"]["batching"]["bucket_sizes"] == [1, 2, 4, 8]


@pytest.mark.parametrize(
    ("path", "raw", "status", "message"),
    [
        ("model:predict", b"{not json", 400, "malformed JSON"),
        ("model:predict", b'{"instances": [[1, 2]]}', 400, "an array of shape (N, 5)"),
        ("model:predict", b'{"instances": [["a", "b", "c", "d", "e"]]}', 400, "made of numbers"),
        ("model:predict", b'{"instances": [[NaN, 0, 0, 0, 0]]}', 400, "finite number"),
        ("model:predict", b'{"instances": [[1, 2, 3, 4, 5], [1]]}', 400, "ragged"),
        ("model:predict", b'{"instances": []}', 400, "non-empty list"),
        ("model:predict", b'{"something": 1}', 400, '"instances" or "inputs"'),
        ("model:predict", b"[" * 20000 + b"]" * 20000, 400, "malformed JSON"),
        ("other:predict", b'{"instances": [[1, 2, 3, 4, 5]]}', 404, "Latest(other)"),
        ("model:classify", b'{"instances": [[1, 2, 3, 4, 5]]}', 404, "answers :predict"),
        ("model/versions/1/nothing", b"{}", 404, "Not Found"),
        ("model:predict", b" " * 1_000_000, 413, "over the limit of 65536"),
    ],
)
def test_bad_requests_get_json_errors_and_the_server_stays_up(server, path, raw, status, message):
    got, answer = call(f"{server}/v1/models/{path}", raw=raw, method="POST")
    assert got == status and message in answer["error"], answer
    assert call(f"{server}/healthz") == (200, {"status": "ok"})


def test_concurrent_requests_are_batched_and_no_size_retraces(npz_model):
    sizes = [1, 3, 2, 1, 2, 1, 3, 1]
    with running(npz_model, max_batch_size=8, max_wait_ms=300) as url:
        traces = call(f"{url}/v1/models/model/metadata")[1]["trainctl"]["traces"]
        with ThreadPoolExecutor(len(sizes)) as pool:
            answers = list(
                pool.map(
                    lambda n: call(
                        f"{url}/v1/models/model:predict", {"instances": samples(n, n).tolist()}
                    ),
                    sizes,
                )
            )
        assert [len(a["predictions"]) for _, a in answers] == sizes
        meta = call(f"{url}/v1/models/model/metadata")[1]["trainctl"]
    batching = meta["batching"]
    assert batching["requests"] == len(sizes) and batching["samples"] >= sum(sizes)
    assert batching["largest_batch_requests"] > 1 and batching["batches"] < len(sizes)
    assert meta["traces"] == traces  # every bucket was compiled at start


def test_without_batching_each_request_runs_alone(npz_model):
    with running(npz_model, batching=False) as url:
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda n: call(
                        f"{url}/v1/models/model:predict", {"instances": samples(2, n).tolist()}
                    ),
                    range(4),
                )
            )
        batching = call(f"{url}/v1/models/model/metadata")[1]["trainctl"]["batching"]
    assert batching["batches"] == batching["requests"] == 4
    assert batching["largest_batch_requests"] == 1


def test_regression_predictions_are_the_values(table_run):
    model = trainctl.load(table_run)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with running(model) as url:
        status, answer = call(f"{url}/v1/models/model:predict", {"instances": x.tolist()})
    assert status == 200
    np.testing.assert_allclose(answer["predictions"], model.predict(x), rtol=1e-5)


def test_sigterm_drains_requests_in_flight(npz_run):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "trainctl", "serve", str(npz_run), "--port", str(port),
         "--max-wait-ms", "1500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()
            with contextlib.suppress(OSError):
                if call(f"{url}/healthz")[0] == 200:
                    break
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(call, f"{url}/v1/models/features:predict",
                                  {"instances": samples(2).tolist()})  # fmt: skip
            time.sleep(0.5)  # the request waits in the batcher for 1.5 s
            process.send_signal(signal.SIGTERM)
            status, answer = pending.result(timeout=30)
        assert status == 200 and len(answer["predictions"]) == 2
        # uvicorn ends by the signal it caught once drained, as a process killed by it would
        assert process.wait(timeout=30) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
        out, err = process.communicate()
    assert "as model 'features' (graph mode" in out and "Traceback" not in err, (out, err)


def test_the_onnxruntime_backend_serves_the_same_predictions(npz_model):
    pytest.importorskip("onnxruntime")
    from trainctl.serve.onnx_backend import OnnxRuntimePredictor

    x = samples(6, seed=3)
    expected = output_scores(npz_model.predict(x), "cross_entropy")[0]
    with running(OnnxRuntimePredictor(npz_model), max_batch_size=4) as url:
        status, answer = call(f"{url}/v1/models/model:predict", {"instances": x.tolist()})
        assert status == 200
        np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-5, atol=1e-6)
        status, answer = call(f"{url}/v1/models/model/metadata")
        assert answer["trainctl"]["mode"] == "onnxruntime"
        status, answer = call(f"{url}/v1/models/model:predict", {"instances": [[1.0, 2.0]]})
        assert status == 400 and "an array of shape (N, 5)" in answer["error"]


@pytest.fixture(scope="module")
def text_model(text_run):
    return trainctl.load(text_run, overrides=["mode=graph"])


def test_a_language_model_continues_texts_as_predict_does(text_model, text_run, tmp_path):
    """Each text of the request gets predict's record for it as a line of a file."""
    texts = ["And God said", "In the beginning", "L"]
    (tmp_path / "texts.txt").write_text("\n".join(texts))
    from trainctl.predict.command import predict_file

    expected = json.loads(predict_file(text_model, tmp_path / "texts.txt", "json", top_k=3))
    with running(text_model, max_batch_size=2) as url:  # 3 texts: two forwards
        status, answer = call(f"{url}/v1/models/model:predict",
                              {"instances": texts, "top_k": 3})  # fmt: skip
        assert status == 200, answer
        assert answer["predictions"] == [
            {k: v for k, v in record.items() if k != "sample"} for record in expected
        ]
        status, answer = call(f"{url}/v1/models/model:predict", {"inputs": texts[:1]})
        assert status == 200 and list(answer["outputs"][0]) == ["next", "probability",
                                                                 "perplexity"]  # fmt: skip
        for body, message in [
            ({"instances": [[1, 2]]}, "expected a non-empty list of texts (strings)"),
            ({"instances": ["And", "Xerxes"]}, "text 1: character 'X' (U+0058) at position 0"),
            ({"instances": [""]}, "text 0: expected at least one character"),
            ({"instances": ["And"], "top_k": 0}, "--top-k must be between 1 and"),
            ({"instances": ["And"], "top_k": "2"}, '"top_k": expected a whole number'),
        ]:
            status, answer = call(f"{url}/v1/models/model:predict", body)
            assert status == 400 and message in answer["error"], (body, answer)
        assert call(f"{url}/healthz")[0] == 200


def test_the_onnxruntime_backend_continues_texts_the_same_way(text_model):
    pytest.importorskip("onnxruntime")
    from trainctl.serve.onnx_backend import OnnxRuntimePredictor

    body = {"instances": ["And God said", "In the"], "top_k": 2}
    with running(text_model) as url:
        expected = call(f"{url}/v1/models/model:predict", body)
    with running(OnnxRuntimePredictor(text_model)) as url:
        status, answer = call(f"{url}/v1/models/model:predict", body)
    assert status == 200 and expected[0] == 200
    for got, want in zip(answer["predictions"], expected[1]["predictions"], strict=True):
        assert [e["next"] for e in got["top_k"]] == [e["next"] for e in want["top_k"]]
        assert got["probability"] == pytest.approx(want["probability"], rel=1e-4)
        assert got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-4)
