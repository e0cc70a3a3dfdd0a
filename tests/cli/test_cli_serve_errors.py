"""`trainctl serve` refuses a port it cannot listen on in one line, exit 2, before loading the
model or announcing anything (uvicorn logged the error after the announcement, exit 3, or
printed a traceback for a port out of range)."""

import socket

import pytest
from typer.testing import CliRunner

from trainctl.cli import app

pytest.importorskip("uvicorn")
runner = CliRunner()


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_a_port_out_of_range_is_one_line(port):
    result = runner.invoke(app, ["serve", "any-run", "--port", port])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"--port must be 1 to 65535, got {port}\n"
    assert result.stdout == ""


def test_a_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "any-run", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert result.stdout == ""


def test_a_host_that_does_not_resolve_is_one_line():
    result = runner.invoke(app, ["serve", "any-run", "--host", "no-such-host.invalid"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("--host no-such-host.invalid: ")
    assert len(result.stderr.splitlines()) == 1
