"""The `trainctl` command line: thin Typer commands that call the library and render with Rich.

Heavy modules (NumPy, CuPy, the engine) are imported inside the commands that need them,
so `trainctl --help` stays fast and never touches the GPU stack.
"""

import typer

from trainctl import __version__

app = typer.Typer(
    name="trainctl",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"trainctl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Train neural networks on trainctl's own autograd engine (NumPy on CPU, CuPy on GPU).

    Example: [bold]trainctl devices[/bold]
    """


@app.command()
def devices() -> None:
    """List the compute devices trainctl can use: the CPU always, CUDA when CuPy finds a GPU.

    Example: [bold]trainctl devices[/bold]
    """
    import numpy as np
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from trainctl import backend

    table = Table(title="Compute devices")
    table.add_column("device", style="bold")
    table.add_column("details")
    table.add_row("cpu", f"NumPy {np.__version__}")
    # Text, not a markup string: the status may hold brackets, as in 'trainctl[gpu]'.
    table.add_row("cuda", Text(backend.cuda_status()))
    Console().print(table)
