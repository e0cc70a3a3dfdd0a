"""Entry point for `python -m trainctl`."""

from trainctl.cli import app

app(prog_name="trainctl")
