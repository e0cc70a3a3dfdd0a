"""`trainctl serve RUN`: the run's model behind TF Serving's REST API, on uvicorn.

uvicorn drains on SIGTERM or Ctrl-C: it stops accepting connections, lets the requests in
flight finish (their batches run), then stops the app, whose batcher finishes its queue.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainctl.errors import TrainctlError
from trainctl.predict.model import load


class ServeError(TrainctlError):
    """A server that cannot start: the serve extra missing, options out of range."""


BACKENDS = ("trainctl", "onnxruntime")


def _require_serve_extra(backend: str) -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise ServeError(
            f"trainctl serve needs {error.name}, which is not installed: "
            "pip install 'trainctl[serve]'"
        ) from None
    if backend == "onnxruntime":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise ServeError(
                f"trainctl serve --backend onnxruntime needs {error.name}, which is not "
                "installed: pip install 'trainctl[export]' onnxruntime"
            ) from None


def serve_run(
    run: str | Path,
    *,
    checkpoint: str = "best",
    host: str = "127.0.0.1",
    port: int = 8501,
    model_name: str | None = None,
    max_batch_size: int = 32,
    max_wait_ms: float = 2.0,
    batching: bool = True,
    max_body_bytes: int = 16 << 20,
    runs_root: str | Path = "runs",
    overrides: Sequence[str] = (),
    announce: Any = print,
    backend: str = "trainctl",
) -> None:
    """Serve run `run` until SIGTERM or Ctrl-C. Graph mode unless `overrides` say
    otherwise: its compiled forward, one program per bucket size; or with `backend`
    "onnxruntime", the run's model exported to ONNX and run by onnxruntime."""
    if max_batch_size < 1 or max_wait_ms < 0 or max_body_bytes < 1:
        raise ServeError(
            "--max-batch-size and --max-body-bytes must be >= 1 and --max-wait-ms >= 0, got "
            f"{max_batch_size}, {max_body_bytes} and {max_wait_ms}"
        )
    if backend not in BACKENDS:
        raise ServeError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if not 0 < port < 65536:
        raise ServeError(f"--port must be 1 to 65535, got {port}")
    _require_serve_extra(backend)
    import uvicorn

    from trainctl.serve.app import ServeOptions, create_app

    with _bound_socket(host, port) as listening:  # a port in use fails before the slow load
        predictor = load(run, checkpoint, runs_root=runs_root, overrides=["mode=graph", *overrides])
        if backend == "onnxruntime":
            from trainctl.serve.onnx_backend import OnnxRuntimePredictor

            predictor = OnnxRuntimePredictor(predictor)
        name = model_name or predictor.restored.config.name
        options = ServeOptions(name, max_batch_size, max_wait_ms, batching, max_body_bytes)
        batches = (
            f"batches of up to {max_batch_size}, {max_wait_ms:g} ms" if batching else "no batching"
        )
        announce(
            f"serving {predictor.run.path} as model {name!r} ({predictor.mode} mode, {batches}) "
            f"on http://{host}:{port}/v1/models/{name}"
        )
        app = create_app(predictor, options)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run does
            server.run(sockets=[listening])
    if not server.started:
        raise ServeError(f"the server on {host}:{port} did not start: see the error above")


def _bound_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads and anything is announced: a port in
    use or an address this machine does not have is a one-line error, where uvicorn would log
    it after the announcement and exit with status 3."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listening = socket.socket(family, kind, proto)
    except OSError as error:
        raise ServeError(f"--host {host}: {error.strerror or error}") from None
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn sets it
    try:
        listening.bind(address)
    except OSError as error:
        listening.close()
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    listening.set_inheritable(True)
    return listening
