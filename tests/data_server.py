"""A local HTTP server standing in for the data set mirrors, and catalogs that point at it.

It serves bytes from a dict, honours `Range: bytes=N-` with a 206, answers 404 for anything
else, and can break a connection off after some bytes (`drop_after`). Every request is
recorded, so a test can see which mirror was asked and with what Range. No test goes online.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from data_files import write_cifar, write_mnist

from trainctl.data.catalog import RemoteDataset, RemoteFile


@dataclass
class Request:
    path: str
    range: str | None
    status: int


@dataclass
class MirrorServer:
    files: dict[str, bytes] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, applied once
    requests: list[Request] = field(default_factory=list)
    base: str = ""

    def url(self, folder: str = "") -> str:
        return f"{self.base}/{folder}"


def _handler(server: MirrorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            body = server.files.get(self.path)
            asked = self.headers.get("Range")
            if body is None:
                server.requests.append(Request(self.path, asked, 404))
                self.send_error(404, "Not Found")
                return
            start = int(asked.removeprefix("bytes=").split("-")[0]) if asked else 0
            status = 206 if asked else 200
            server.requests.append(Request(self.path, asked, status))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) - start))
            if asked:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            cut = server.drop_after.pop(self.path, None)
            self.wfile.write(body[start:] if cut is None else body[start:cut])
            if cut is not None:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


def start_server() -> tuple[MirrorServer, ThreadingHTTPServer]:
    state = MirrorServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return state, httpd


def refused_url() -> str:
    """A URL on a local port nothing listens on: every connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def remote_file(name: str, data: bytes) -> RemoteFile:
    return RemoteFile(name, len(data), hashlib.sha256(data).hexdigest())


def mnist_files(tmp: Path, sizes=(40, 10)) -> dict[str, bytes]:
    """The four gzipped IDX files of a tiny MNIST-format set, as a mirror serves them."""
    write_mnist(tmp, sizes=sizes, gz=True)
    return {path.name: path.read_bytes() for path in sorted(tmp.glob("*.gz"))}


def cifar_archive(tmp: Path, per_batch: int = 8, test_size: int = 6) -> bytes:
    """cifar-10-binary.tar.gz as the Toronto server has it: the batches in cifar-10-batches-bin/."""
    write_cifar(tmp / "cifar-10-batches-bin", per_batch=per_batch, test_size=test_size)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(tmp / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    return gzip.compress(buffer.getvalue())


def serve_dataset(
    state: MirrorServer, real: RemoteDataset, files: dict[str, bytes], folder: str
) -> RemoteDataset:
    """`real` with its files replaced by `files`, served under /folder/ and the only mirror."""
    for name, data in files.items():
        state.files[f"/{folder}/{name}"] = data
    remote_files = tuple(remote_file(name, data) for name, data in files.items())
    return RemoteDataset(
        name=real.name,
        files=remote_files,
        mirrors=(state.url(f"{folder}/"),),
        needed=real.needed,
        unpack=real.unpack,
        subfolder=real.subfolder,
    )


def serve_all(state: MirrorServer, monkeypatch, tmp: Path) -> dict[str, dict[str, bytes]]:
    """Point the catalog's mnist, fashion_mnist and cifar10 at tiny files on `state`'s server,
    and the data cache (TRAINCTL_DATA) at tmp/cache; returns the files served per data set."""
    from trainctl.data.catalog import REMOTE_DATASETS

    served = {
        "mnist": mnist_files(tmp / "mnist-files"),
        "fashion_mnist": mnist_files(tmp / "fashion-files", sizes=(30, 10)),
        "cifar10": {"cifar-10-binary.tar.gz": cifar_archive(tmp / "cifar-files")},
    }
    for name, files in served.items():
        remote = serve_dataset(state, REMOTE_DATASETS[name], files, name)
        monkeypatch.setitem(REMOTE_DATASETS, name, remote)
    monkeypatch.setenv("TRAINCTL_DATA", str(tmp / "cache"))
    return served
