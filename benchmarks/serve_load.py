"""Load on `trainctl serve`: requests/s and p50/p99 latency at several concurrencies, with and
without server-side batching, for trainctl's graph mode and for onnxruntime running the
exported model in the same server (`--backend onnxruntime`), in one run.

Trains the quickstart (configs/digits_mlp.yaml, or --config) into a temporary folder unless
--run names a run, starts `trainctl serve` on a free loopback port once per batching
setting, and sends a fixed number of TF Serving predict requests (one random 8x8 image each)
from N client threads, each on its own keep-alive connection. The clients share the machine
with the server, so on a small machine they take CPU from it: compare the rows of one run.

    python benchmarks/serve_load.py
    python benchmarks/serve_load.py --requests 4000 --concurrency 1,8,64 --max-wait-ms 2
    python benchmarks/serve_load.py --config configs/digits_cnn.yaml
    python benchmarks/serve_load.py --backends trainctl   # without onnxruntime
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def train(config: Path, folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "trainctl", "train", str(config), "--runs-root", str(folder), "-q"],
        check=True,
    )  # fmt: skip
    (run,) = folder.iterdir()
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run: Path, port: int, extra: list[str]) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "trainctl", "serve", str(run), "--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not start")


def load(port: int, path: str, bodies: list[bytes], concurrency: int) -> list[float]:
    """Latencies (s) of every request, `concurrency` clients sharing the list of bodies."""

    def client(share: list[bytes]) -> list[float]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies = []
        for body in share:
            started = time.perf_counter()
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise SystemExit(f"request failed with {answer.status}")
            latencies.append(time.perf_counter() - started)
        connection.close()
        return latencies

    shares = [bodies[i::concurrency] for i in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        return [t for part in pool.map(client, shares) for t in part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a run folder (default: train --config)")
    parser.add_argument(
        "--config", type=Path, default=ROOT / "configs" / "digits_mlp.yaml", help="to train"
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per row")
    parser.add_argument("--concurrency", default="1,8,64", help="client threads, per row")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--backends", default="trainctl,onnxruntime", help="servers, per row")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or train(args.config, Path(scratch))
        name = json.loads((run / "summary.json").read_text())["name"]
        samples = np.random.default_rng(0).random((args.requests, 8, 8, 1)).round(4)
        bodies = [json.dumps({"instances": [s.tolist()]}).encode() for s in samples]
        print(f"run {run}, {args.requests} requests of 1 sample per row\n")
        print("| backend | batching | clients | requests/s | p50 ms | p99 ms |")
        print("|---|---|---:|---:|---:|---:|")
        batchings = [
            (f"up to {args.max_batch_size}, {args.max_wait_ms:g} ms",
             ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms",
              str(args.max_wait_ms)]),
            ("off", ["--no-batching"]),
        ]  # fmt: skip
        settings = [
            (f"{backend} | {label}", [*extra, "--backend", backend])
            for backend in args.backends.split(",")
            for label, extra in batchings
        ]
        for label, extra in settings:
            port = free_port()
            server = start_server(run, port, extra)
            try:
                path = f"/v1/models/{name}:predict"
                load(port, path, bodies[:50], 4)  # warm-up
                for concurrency in (int(c) for c in args.concurrency.split(",")):
                    started = time.perf_counter()
                    latencies = np.array(load(port, path, bodies, concurrency)) * 1e3
                    rate = len(latencies) / (time.perf_counter() - started)
                    p50, p99 = np.percentile(latencies, [50, 99])
                    print(f"| {label} | {concurrency} | {rate:.0f} | {p50:.2f} | {p99:.2f} |")
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)


if __name__ == "__main__":
    main()
