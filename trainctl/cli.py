"""The `trainctl` command line: thin Typer commands that call the library and render with Rich.

Heavy modules (NumPy, CuPy, the engine) are imported inside the commands that need them,
so `trainctl --help` stays fast and never touches the GPU stack. A TrainctlError raised by any
command becomes its message on stderr and its exit code (2 for bad input, 1 for a run that
failed, e.g. a non-finite loss) in one place, `_App.invoke`; an error raised in the code of a
Python model (model.python) shows the user's own traceback instead, exit code 1.
"""

from pathlib import Path
from typing import Any

import typer

from trainctl import __version__
from trainctl.cli_help import HelpCommand, HelpGroup
from trainctl.errors import TrainctlError

EXIT_USER_ERROR = 2
EXIT_FAILED = 1
# click's UsageError, from the copy of click that recent Typer carries (typer._click) or from
# click itself under older Typer: typer.BadParameter derives from it either way.
_UsageError = typer.BadParameter.__base__


class _App(HelpGroup):
    """The command group: user errors are messages, not tracebacks (unless --debug)."""

    def make_context(self, info_name: str | None, args: list[str], *a: Any, **kw: Any) -> Any:
        try:  # the top level's own usage errors: an unknown option or command
            return super().make_context(info_name, args, *a, **kw)
        except _UsageError as exc:
            raise _usage_exit(exc) from None
        except BrokenPipeError:  # `trainctl --help | head -3`
            raise _closed_stdout_exit() from None

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageError as exc:  # a command's: a missing argument, a bad value
            raise _usage_exit(exc) from None
        except BrokenPipeError:  # stdout's reader went away (`trainctl runs | head -3`)
            raise _closed_stdout_exit() from None
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            report = _user_code_report(exc)
            if report is not None:  # an error in the user's model code: their traceback
                typer.echo(_printable(report), err=True)
                raise typer.Exit(EXIT_FAILED) from None
            if not isinstance(exc, TrainctlError):
                raise
            typer.echo(_printable(str(exc)), err=True)
            raise typer.Exit(getattr(exc, "exit_code", EXIT_USER_ERROR)) from None


def _closed_stdout_exit() -> Exception:
    """Exit status 141, as SIGPIPE would end the process, with nothing more written."""
    from trainctl.closed_stdout import EXIT_CLOSED_STDOUT, silence_stdout

    silence_stdout()
    return typer.Exit(EXIT_CLOSED_STDOUT)


def _usage_exit(exc: Any) -> Exception:
    """A usage error as one line naming the command, like every other error of trainctl,
    instead of Typer's usage box; the help that `no_args_is_help` shows passes through."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # as Typer tells it (click >= 8.2 only)
        return exc
    where = exc.ctx.command_path if exc.ctx is not None else "trainctl"
    message = exc.format_message().rstrip(".")
    typer.echo(
        _printable(f"{where}: {message[:1].lower()}{message[1:]}; see {where} --help"), err=True
    )
    return typer.Exit(exc.exit_code)


def _user_code_report(exc: Exception) -> str | None:
    """The user's own traceback when `exc` came from a Python model's code (config
    model.python), else None."""
    import sys

    if "trainctl.nn.python_model" not in sys.modules:  # no user code was loaded
        return None
    from trainctl.nn.python_model import user_traceback

    return user_traceback(exc)


def _printable(message: str) -> str:
    """`message` with every character a terminal would act on (escape sequences, a NUL, line
    breaks other than the ones between issues) written as a Python escape such as \\x1b:
    a message quotes file names and contents, and stays one line per problem."""
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in message)


app = typer.Typer(
    name="trainctl",
    cls=_App,
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
)

_OVERRIDES = typer.Option(
    [],
    "--set",
    metavar="KEY=VALUE",
    help="Override one config value, e.g. --set optimizer.lr=0.1 (repeatable; the value is YAML).",
)


def _command_line(command: str, *arguments: str | None) -> list[str]:
    """The command as typed, for the records of a run; when trainctl is driven from Python
    (tests, notebooks) sys.argv is someone else's, so the command and its arguments stand in."""
    import sys

    if Path(sys.argv[0]).name in ("trainctl", "__main__.py"):
        return ["trainctl", *sys.argv[1:]]
    return ["trainctl", command, *(a for a in arguments if a)]


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
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an error instead of its message."
    ),
) -> None:
    """Train neural networks on trainctl's own autograd engine (NumPy on CPU, CuPy on GPU).

    Example: [bold]trainctl train configs/digits_mlp.yaml[/bold], then [bold]trainctl
    runs[/bold]
    """
    from trainctl.host_memory import keep_freed_memory

    keep_freed_memory()  # eager steps reuse their activations' memory (see host_memory)


@app.command(cls=HelpCommand)
def devices() -> None:
    """List the compute devices trainctl can use: the CPU always, CUDA when CuPy finds a GPU.

    Example: [bold]trainctl devices[/bold]
    """
    import numpy as np
    from rich.table import Table
    from rich.text import Text

    from trainctl import backend
    from trainctl.closed_stdout import StdoutConsole

    table = Table(title="Compute devices")
    table.add_column("device", style="bold")
    table.add_column("details")
    table.add_row("cpu", f"NumPy {np.__version__}")
    # Text, not a markup string: the status may hold brackets, as in 'trainctl[gpu]'.
    table.add_row("cuda", Text(backend.cuda_status()))
    StdoutConsole().print(table)


@app.command(cls=HelpCommand)
def validate(
    config: str = typer.Argument(..., metavar="CONFIG", help="The YAML config file."),
    overrides: list[str] = _OVERRIDES,
    build: bool = typer.Option(
        False, "--build", help="Also run train's set-up: data, model, optimizer, transforms."
    ),
) -> None:
    """Check a config without training: every problem at once, with file, line and key.

    Checks the schema and every name against the known layers, losses, metrics, data sets,
    transforms, optimizers and schedules; exits 0 when the config is valid, 2 when not. With
    --build it also runs everything train does before its first step: reads the data files,
    checks memory and run length, builds the model, optimizer and step for the data and fits
    the transforms to it, which catches layers and transforms that do not fit the data (and
    missing or corrupt files).

    Example: [bold]trainctl validate configs/mnist_mlp.yaml --set optimizer.lr=0.1[/bold]
    """
    from trainctl.config import load_config, summary

    loaded = load_config(config, overrides)
    if not build:
        typer.echo(f"{config} is valid: {summary(loaded)}")
        return
    from trainctl.nn.build import count_parameters
    from trainctl.train.prepare import prepare_training

    parts = prepare_training(loaded).components
    data = parts.data
    sizes = ", ".join(
        f"{len(getattr(data, s))} {s}" for s in ("train", "val", "test") if getattr(data, s)
    )
    typer.echo(f"{config} is valid: {summary(loaded)}")
    typer.echo(
        f"built: {count_parameters(parts.model):,} parameters, samples {data.input_shape} -> "
        f"outputs {parts.output_shape}; {data.name}: {sizes}"
    )
    from trainctl.nn.blocks import Blocks

    if isinstance(parts.model, Blocks):  # a DAG of blocks shows its wiring
        for line in parts.model.describe():
            typer.echo(f"  {line}")


@app.command("config", cls=HelpCommand)
def show_config(
    config: str = typer.Argument(..., metavar="CONFIG", help="The YAML config file."),
    overrides: list[str] = _OVERRIDES,
) -> None:
    """Print the config as trainctl reads it: overrides applied, every default filled in.

    Example: [bold]trainctl config configs/digits_mlp.yaml --set data.batch_size=128[/bold]
    """
    from trainctl.config import dump_config, load_config

    typer.echo(dump_config(load_config(config, overrides)), nl=False)


def _train_arguments(ctx: typer.Context) -> list[str]:
    """`train`'s own command line, rebuilt from its parsed options for the ranks to parse."""
    arguments = []
    for parameter in ctx.command.params:
        value = ctx.params.get(parameter.name)
        if value is None or value is False or value == parameter.default:
            continue
        if not parameter.opts[0].startswith("-"):
            arguments.append(str(value))
        elif value is True:
            arguments.append(parameter.opts[0])
        else:
            for item in value if isinstance(value, (list, tuple)) else [value]:
                arguments += [parameter.opts[0], str(item)]
    return arguments


@app.command(cls=HelpCommand)
def train(
    ctx: typer.Context,
    config: str = typer.Argument(
        None, metavar="CONFIG", help="The YAML config (optional with --resume)."
    ),
    overrides: list[str] = _OVERRIDES,
    resume: str = typer.Option(
        None,
        "--resume",
        metavar="RUN",
        help=(
            "Continue this run (its folder, or its name under --runs-root) from its last "
            "checkpoint; --set may change how long it goes on, its log, eval and checkpoint "
            "cadence and its early stopping."
        ),
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help=(
            "Go ahead anyway: with a model that needs more memory than is free, with more "
            "than a billion steps, or (with --resume) with config keys a resume may not change."
        ),
    ),
    name: str = typer.Option(None, "--name", help="Run name (default: the config's name)."),
    run_dir: Path = typer.Option(
        None, "--run-dir", help="Write the run into exactly this (new or empty) folder."
    ),
    runs_root: Path = typer.Option(
        Path("runs"), "--runs-root", help="Where run folders are created (and --resume looks)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final result."),
    nproc: int = typer.Option(
        None,
        "--nproc",
        min=1,
        metavar="N",
        help=(
            "Train with N processes, synchronous data parallelism over MPI (the distributed "
            "extra): data.batch_size is the global batch. Starts `mpiexec -n N` itself; "
            "under mpiexec, mpirun or srun the same command line trains as one of the ranks."
        ),
    ),
) -> None:
    """Train a model described by a YAML config; everything goes into a new run folder.

    Shows a progress bar on a terminal and one line per logged step otherwise. Ctrl-C (or
    SIGTERM) finishes the current step (or drops an evaluation under way), writes a checkpoint
    and prints the resume command; a closed stdout (| head -3) does the same, quietly, exit
    code 141. A run that needs more memory than the device has free is
    refused before anything is allocated (--force to try anyway).

    Example: [bold]trainctl train configs/digits_mlp.yaml --set optimizer.lr=0.1[/bold],
    then [bold]trainctl train --resume digits-mlp-20261123-101500 --set train.epochs=30[/bold];
    on two processes: [bold]trainctl train configs/digits_mlp.yaml --nproc 2[/bold]
    """

    from trainctl.config import load_config
    from trainctl.distributed import current_world
    from trainctl.distributed.world import failing_together
    from trainctl.number_format import metric_text
    from trainctl.train.progress import SilentReporter, make_reporter
    from trainctl.train.rundir import find_run
    from trainctl.train.trainer import TrainOptions
    from trainctl.train.trainer import train as run_training

    loaded = load_config(config, overrides) if config else None
    world = current_world()
    if nproc is not None and nproc > 1 and world.size == 1:
        from trainctl.distributed.launch import launch
        from trainctl.distributed.parallel import check_data_parallel

        if loaded is not None:
            check_data_parallel(loaded, nproc)
        arguments = ["--debug"] if ctx.parent is not None and ctx.parent.params["debug"] else []
        raise typer.Exit(launch(nproc, arguments + ["train", *_train_arguments(ctx)]))
    if nproc is not None and nproc != world.size:
        from trainctl.distributed import DistributedError

        raise DistributedError(
            f"--nproc {nproc} was given, but the MPI launcher started {world.size} "
            f"process(es): give --nproc {world.size} or leave --nproc out under mpiexec"
        )
    resume_dir = find_run(resume, runs_root).path if resume is not None else None
    options = TrainOptions(
        runs_root,
        run_dir,
        name,
        resume_dir,
        force,
        command=_command_line("train", config),
        overrides=[] if loaded else overrides,
    )
    reporter = make_reporter(quiet) if world.is_root else SilentReporter()
    try:
        with failing_together(world):
            result = run_training(loaded, options, reporter)
    finally:
        reporter.close()
    if not world.is_root:  # rank 0 reports for the whole job
        raise typer.Exit(result.exit_code)
    summary = result.summary
    final = summary.get("final", {}).get("val") or {
        "train loss": summary.get("final", {}).get("train_loss")
    }
    scores = ", ".join(f"{k} {metric_text(v)}" for k, v in final.items() if isinstance(v, float))
    typer.echo(
        f"{result.status}: {summary['steps']} steps in {summary['duration_s']:.1f}s"
        f"{', ' + scores if scores else ''}; run folder {result.run.path}"
    )
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command("eval", cls=HelpCommand)
def evaluate(
    run: str = typer.Argument(
        ..., metavar="RUN", help="A run folder, or its name under --runs-root."
    ),
    checkpoint: str = typer.Option(
        "best", "--checkpoint", "-c", help="best, last, or the path of a checkpoint file."
    ),
    split: str = typer.Option("test", "--split", "-s", help="test, val or train."),
    overrides: list[str] = _OVERRIDES,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where runs are looked up."),
) -> None:
    """Score a run's checkpoint on one split: loss, metrics and (classes) a confusion matrix.

    Writes eval-<split>.json into the run folder. --set may change how the run is scored
    (batch size, device, mode), never which samples it held out (seed, data set, options,
    path, split fractions); a run's splits.json catches data files changed since training,
    and a checkpoint of another run is scored only if that run was split the same way.

    Example: [bold]trainctl eval runs/digits-mlp-20261123-101500 --split test[/bold]
    """
    import json

    from trainctl.closed_stdout import StdoutConsole
    from trainctl.render import confusion_table, scores_table
    from trainctl.train.rundir import find_run
    from trainctl.train.scoring import score_run

    score = score_run(find_run(run, runs_root).path, checkpoint, split, overrides)
    if as_json:
        typer.echo(json.dumps(score.as_dict(), indent=2))
        return
    console = StdoutConsole()
    console.print(
        f"{score.run.path.name}: {split} split, {score.result.samples} samples, "
        f"checkpoint {score.checkpoint.name} (step {score.checkpoint_step})",
        markup=False,
        highlight=False,
    )
    console.print(scores_table({"loss": score.result.loss, **score.scores}))
    if score.confusion is not None and len(score.confusion) <= 20:
        console.print(confusion_table(score.confusion, score.class_names))
    console.print(f"wrote {score.report_path}", markup=False, highlight=False)


@app.command(cls=HelpCommand)
def predict(
    run: str = typer.Argument(
        ..., metavar="RUN", help="A run folder, or its name under --runs-root."
    ),
    input_path: Path = typer.Argument(
        ...,
        metavar="INPUT",
        help="An .npz archive, a .csv file, a PNG/JPEG image or a folder; a text run: a text file.",
    ),
    output: Path = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Write to FILE (.csv or .json), not stdout."
    ),
    fmt: str = typer.Option(
        None, "--format", metavar="FORMAT", help="csv or json (default: by -o's suffix, else csv)."
    ),
    checkpoint: str = typer.Option(
        "best", "--checkpoint", "-c", help="best, last, or the path of a checkpoint file."
    ),
    top_k: int = typer.Option(1, "--top-k", metavar="K", help="The K likeliest classes."),
    key: str = typer.Option(
        None, "--key", metavar="NAME", help="The .npz array to read (default: x, or the only one)."
    ),
    resize: bool = typer.Option(
        False, "--resize", help="Resize images of another size to the run's (bilinear)."
    ),
    overrides: list[str] = _OVERRIDES,
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where runs are looked up."),
) -> None:
    """Run a run's checkpoint on new samples: per sample its class and probability (top K),
    or its regression values, as CSV or JSON.

    The inputs are read as the run's data set reads its own (a table's target column, if
    there, is left out); the run's normalize is applied, training-only transforms are not, and
    the model runs in eval mode through the run's own mode (graph mode's compiled forward or
    eager). --set may change how it runs (device, mode, data.eval_batch_size). A bar on
    stderr follows inputs of several batches. A character language model (the text data
    set) takes a text file, one text per line, and writes per line the likeliest next
    characters (top K) and the model's perplexity on the line.

    Example: [bold]trainctl predict digits-mlp-20261123-101500 new.npz -o predictions.csv[/bold]
    """
    from trainctl.predict import load
    from trainctl.predict.command import predict_file
    from trainctl.predict.output import format_for

    chosen = format_for(None if output is None else str(output), fmt)
    predictor = load(run, checkpoint, runs_root=runs_root, overrides=overrides)
    text = predict_file(predictor, input_path, chosen, top_k=top_k, key=key, resize=resize)
    if output is None:
        typer.echo(text, nl=False)
        return
    from trainctl.train.atomic import atomic_write_text

    atomic_write_text(output, text)
    typer.echo(f"wrote {output}")


@app.command(cls=HelpCommand)
def sample(
    run: str = typer.Argument(
        ..., metavar="RUN", help="A run folder, or its name under --runs-root."
    ),
    prompt: str = typer.Option(..., "--prompt", metavar="TEXT", help="The text to continue."),
    tokens: int = typer.Option(200, "--tokens", metavar="N", help="How many characters to add."),
    temperature: float = typer.Option(
        1.0, "--temperature", metavar="T", help="Sharpen (< 1) or flatten (> 1); 0: greedy."
    ),
    seed: int = typer.Option(0, "--seed", metavar="S", help="Seed of the draws."),
    checkpoint: str = typer.Option(
        "best", "--checkpoint", "-c", help="best, last, or the path of a checkpoint file."
    ),
    overrides: list[str] = _OVERRIDES,
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where runs are looked up."),
) -> None:
    """Continue a prompt with a character language model run (the text data set).

    Characters are drawn one at a time from the model at the given temperature; the prompt
    may use only characters of the run's vocabulary (its training text), and the model must
    be causal (it is checked). The same seed writes the same text. While the text fits the
    run's window each character is a forward over its one position (a KV cache).

    Example: [bold]trainctl sample char-transformer-20261205-080000 --prompt "And God said"
    --tokens 200 --temperature 0.8[/bold]
    """
    from trainctl.predict import load
    from trainctl.predict.sample import sample_text

    predictor = load(run, checkpoint, runs_root=runs_root, overrides=overrides)
    typer.echo(sample_text(predictor, prompt, tokens, temperature, seed))


@app.command(cls=HelpCommand)
def export(
    run: str = typer.Argument(
        ..., metavar="RUN", help="A run folder, or its name under --runs-root."
    ),
    fmt: str = typer.Option("onnx", "--format", metavar="FORMAT", help="onnx (the only one)."),
    output: Path = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Where to write it (default: RUN/model.onnx)."
    ),
    checkpoint: str = typer.Option(
        "best", "--checkpoint", "-c", help="best, last, or the path of a checkpoint file."
    ),
    overrides: list[str] = _OVERRIDES,
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where runs are looked up."),
) -> None:
    """Export a run's model to ONNX, for onnxruntime, TensorRT and other runtimes.

    The graph is the model's eval-mode forward (BatchNorm's running statistics, no dropout)
    as graph mode traces it, with the run's normalize first, so it takes what predict takes:
    `inputs` of shape (batch, ...) with any batch size. Its outputs are `outputs` (the last
    layer) and, for classification, `probabilities`; the metadata holds the config name, the
    class names, the input layout and the trainctl version. Checked with onnx.checker.
    Needs the export extra: pip install 'trainctl[export]'.

    Example: [bold]trainctl export digits-mlp-20261123-101500 -o digits.onnx[/bold]
    """
    from trainctl.export.command import export_run

    report = export_run(
        run, fmt, output, checkpoint=checkpoint, runs_root=runs_root, overrides=overrides
    )
    typer.echo(
        f"wrote {report.path}: {report.nodes} nodes, {report.parameters:,} weights, "
        f"outputs {', '.join(report.outputs)}"
    )


@app.command(cls=HelpCommand)
def serve(
    run: str = typer.Argument(
        ..., metavar="RUN", help="A run folder, or its name under --runs-root."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="The address to listen on (0.0.0.0: every interface)."
    ),
    port: int = typer.Option(8501, "--port", help="The port (TF Serving's REST port: 8501)."),
    model_name: str = typer.Option(
        None, "--model-name", metavar="NAME", help="The NAME in /v1/models/NAME (the config's)."
    ),
    max_batch_size: int = typer.Option(
        32, "--max-batch-size", metavar="N", help="Samples one forward may batch together."
    ),
    max_wait_ms: float = typer.Option(
        2.0, "--max-wait-ms", metavar="MS", help="How long a batch waits for more requests."
    ),
    batching: bool = typer.Option(
        True, "--batching/--no-batching", help="Batch concurrent requests together."
    ),
    backend: str = typer.Option(
        "trainctl",
        "--backend",
        metavar="NAME",
        help="trainctl (graph mode) or onnxruntime (the model exported to ONNX).",
    ),
    max_body_bytes: int = typer.Option(
        16 << 20, "--max-body-bytes", metavar="BYTES", help="Larger request bodies get a 413."
    ),
    checkpoint: str = typer.Option(
        "best", "--checkpoint", "-c", help="best, last, or the path of a checkpoint file."
    ),
    overrides: list[str] = _OVERRIDES,
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where runs are looked up."),
) -> None:
    """Serve a run's model over HTTP with TensorFlow Serving's REST API.

    POST /v1/models/NAME:predict takes {"instances": [...]} (or {"inputs": ...}) and answers
    {"predictions": [...]}: class probabilities, or regression values (a character language
    model takes texts and answers the likeliest next characters). GET /v1/models/NAME is
    its status, GET /v1/models/NAME/metadata its input signature, GET /healthz. Concurrent
    requests run as one batch through graph mode's compiled forward, padded to bucket sizes
    compiled at start. --backend onnxruntime serves the model exported to ONNX instead.
    SIGTERM or Ctrl-C finishes the requests in flight, then stops.

    Example: [bold]trainctl serve digits-mlp-20261123-101500 --port 8501[/bold]
    """
    from trainctl.serve.server import serve_run

    serve_run(
        run, checkpoint=checkpoint, host=host, port=port, model_name=model_name,
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, batching=batching,
        max_body_bytes=max_body_bytes, runs_root=runs_root, overrides=overrides,
        announce=typer.echo, backend=backend,
    )  # fmt: skip


runs_app = typer.Typer(
    cls=HelpGroup,
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(runs_app, name="runs")


@runs_app.callback()
def runs_list(
    ctx: typer.Context,
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where run folders live."),
    plain: bool = typer.Option(
        False, "--plain", help="Tab-separated lines, as printed when stdout is not a terminal."
    ),
) -> None:
    """List training runs (name, status, steps, best metric, duration, mode, device), or
    show one.

    A run that ended without finishing its summary (killed) is listed as stopped, with the
    steps and best metric its files hold. On a narrow terminal the least useful columns
    (device, mode, duration, steps) are left out. In a pipe, or with --plain, it prints a
    header and one tab-separated line per run with every column, so [bold]trainctl runs |
    grep completed[/bold] works. A run whose summary.json cannot be read is listed as
    unreadable, with one line saying why on stderr, and the exit code is 2; so is a runs
    folder that does not exist.

    Example: [bold]trainctl runs[/bold], then [bold]trainctl runs show RUN_NAME[/bold]
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = runs_root
        return
    from trainctl.closed_stdout import StdoutConsole
    from trainctl.errors import RunFolderError
    from trainctl.render import runs_table, runs_tsv
    from trainctl.train.run_status import current_summary
    from trainctl.train.rundir import list_runs

    if not runs_root.exists():  # a mistyped --runs-root is not an empty one
        raise RunFolderError(
            f"the runs folder {runs_root} does not exist (trainctl train creates it with its "
            "first run)"
        )
    rows, damaged = [], []
    for folder in list_runs(runs_root):
        try:
            rows.append((folder.path.name, current_summary(folder)))
        except TrainctlError as exc:
            rows.append((folder.path.name, {"status": "unreadable"}))
            damaged.append(str(exc))
    if not rows:
        typer.echo(f"no runs in {runs_root}")
        return
    console = StdoutConsole()
    if plain or not console.is_terminal:
        typer.echo(runs_tsv(rows), nl=False)
    else:
        console.print(runs_table(rows, console.width))
    if damaged:  # listed all the same; the exit code tells a script that some are damaged
        raise RunFolderError("\n".join(damaged))


@runs_app.command("show", cls=HelpCommand)
def runs_show(
    ctx: typer.Context,
    run: str = typer.Argument(
        ..., metavar="RUN", help="A run folder, or its name under --runs-root."
    ),
    runs_root: Path = typer.Option(
        None, "--runs-root", help="Where runs are looked up (default: that of runs, or runs)."
    ),
) -> None:
    """Print a run's summary and its training loss curve; for a run that stopped without
    finishing (killed), the command that resumes it.

    Example: [bold]trainctl runs show digits-mlp-20261123-101500[/bold]
    """
    from trainctl.closed_stdout import StdoutConsole
    from trainctl.render import loss_curve, summary_table
    from trainctl.train.metrics_log import read_metrics
    from trainctl.train.run_status import current_summary
    from trainctl.train.rundir import find_run

    folder = find_run(run, runs_root or ctx.obj or Path("runs"))
    console = StdoutConsole()
    console.print(summary_table(current_summary(folder)))
    records = read_metrics(folder.metrics_path) if folder.metrics_path.exists() else []
    points = [(r.get("step"), r.get("loss")) for r in records if r.get("kind") == "train"]
    console.print("training loss", style="bold")
    console.print(loss_curve(points), markup=False, highlight=False)


data_app = typer.Typer(
    cls=HelpGroup,
    help="Fetch the classic data sets, or list them.\n\nExample: [bold]trainctl data fetch "
    "mnist[/bold], then [bold]trainctl data list[/bold]",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

_DATA_ROOT = typer.Option(
    None,
    "--root",
    metavar="DIR",
    help="Fetch into DIR/NAME instead of the data cache (default: $TRAINCTL_DATA, else the "
    "platform's cache folder, e.g. ~/.cache/trainctl).",
)


@data_app.command("fetch", cls=HelpCommand)
def data_fetch(
    name: str = typer.Argument(..., metavar="NAME", help="mnist, fashion_mnist or cifar10."),
    root: Path = _DATA_ROOT,
) -> None:
    """Download a data set into the data cache (or DIR/NAME), unless it is there already.

    Tries each mirror in turn, checks every file's SHA-256, resumes a download that broke
    off, and gives a file its final name only once it is complete and checked. Offline, it
    names the files to place by hand and the folder. A config with data.download: true does
    the same on first use.

    Example: [bold]trainctl data fetch mnist[/bold], then
    [bold]trainctl train configs/mnist_mlp.yaml[/bold]
    """
    from trainctl.data.cache import dataset_folder
    from trainctl.data.download_progress import RichDownloadProgress
    from trainctl.data.fetch import fetch_dataset

    result = fetch_dataset(name, dataset_folder(name, root), RichDownloadProgress())
    if result.fetched:
        typer.echo(f"{name}: fetched {', '.join(result.fetched)} into {result.folder}")
    else:
        typer.echo(f"{name} is already in {result.folder}")


@data_app.command("list", cls=HelpCommand)
def data_list(
    root: Path = typer.Option(None, "--root", metavar="DIR", help="Look in DIR/NAME instead."),
) -> None:
    """List the data sets trainctl fetches: present or not, their size on disk and folder.

    One line per data set, the folder last, so the output suits grep and awk as it is.

    Example: [bold]trainctl data list[/bold]
    """
    from trainctl.data.fetch import dataset_status
    from trainctl.render import datasets_lines

    typer.echo(datasets_lines(dataset_status(root)))


def _int_list(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        message = f"{option} takes integers separated by commas, got {text!r}"
        raise typer.BadParameter(message) from None


@app.command(cls=HelpCommand)
def compare(
    config: str = typer.Argument(..., metavar="CONFIG", help="The YAML config to benchmark."),
    overrides: list[str] = _OVERRIDES,
    steps: int = typer.Option(60, "--steps", help="Timed steps per mode (and batch size)."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed steps after the first one."),
    rounds: int = typer.Option(4, "--rounds", help="Alternating rounds the steps are split in."),
    batch_sizes: str = typer.Option(
        None, "--batch-sizes", help="Sweep batch sizes, e.g. 16,64,256,1024."
    ),
    modes: str = typer.Option("eager,graph", "--modes", help="Modes to run, e.g. eager,graph."),
    with_peer: str = typer.Option(
        None, "--with", metavar="PEER", help="Add a peer framework: torch (needs PyTorch)."
    ),
    eval_too: bool = typer.Option(False, "--eval", help="Also time the forward-only path."),
    profile: bool = typer.Option(
        False, "--profile", help="Add a per-op eager profile (a separate, labelled pass)."
    ),
    loss_rtol: float = typer.Option(1e-6, "--loss-rtol", help="Tolerance on every step's loss."),
    param_atol: float = typer.Option(
        1e-5, "--param-atol", help="Tolerance on the final parameters."
    ),
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where the report goes."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report to stdout."),
) -> None:
    """Benchmark the config's training step in eager and graph mode, side by side.

    Same seed, weights and batches for every mode; rounds alternate between modes; reports
    step-time median/p10/p90, trace and compile time, peak memory, op and node counts, the
    speedup with its spread, and whether the modes agree (exit code 1 when they do not).
    Writes runs/compare-<name>-<time>/ with compare.json, compare.md and compare.png.

    Example: [bold]trainctl compare configs/digits_mlp.yaml --batch-sizes 16,64,256[/bold]
    """
    import shlex

    from trainctl.bench.compare import CompareOptions, DisagreementError
    from trainctl.bench.compare import compare as run_compare
    from trainctl.bench.report import report_json, rich_report, save_report
    from trainctl.closed_stdout import StdoutConsole
    from trainctl.config import load_config

    if with_peer not in (None, "torch"):
        raise typer.BadParameter(f"--with takes torch, got {with_peer!r}")
    options = CompareOptions(
        steps=steps,
        warmup=warmup,
        rounds=rounds,
        batch_sizes=_int_list(batch_sizes, "--batch-sizes"),
        modes=[m.strip() for m in modes.split(",") if m.strip()],
        eval=eval_too,
        profile=profile,
        with_torch=with_peer == "torch",
        loss_rtol=loss_rtol,
        param_atol=param_atol,
    )
    loaded = load_config(config, overrides)
    report = run_compare(loaded, options)
    command = shlex.join(_command_line("compare", config))
    folder, chart_note = save_report(report, runs_root, command)
    if as_json:
        typer.echo(report_json({**report, "report_dir": str(folder)}))
    else:
        console = StdoutConsole()
        console.print(rich_report(report))
        if chart_note:
            console.print(chart_note, markup=False, highlight=False)
        console.print(f"wrote {folder}/compare.json, compare.md", markup=False, highlight=False)
    if not report["ok"]:
        raise DisagreementError(f"the modes disagree beyond tolerance: see {folder / 'compare.md'}")


@app.command(cls=HelpCommand)
def graph(
    config: str = typer.Argument(..., metavar="CONFIG", help="The YAML config."),
    overrides: list[str] = _OVERRIDES,
    stage: str = typer.Option(
        "optimized", "--stage", help="traced (as recorded) or optimized (after the passes)."
    ),
    fmt: str = typer.Option(
        "text",
        "--format",
        metavar="FORMAT",
        help="text (IR, one node per line), dot (Graphviz) or code (Python).",
    ),
    disable: str = typer.Option(
        None, "--disable", metavar="PASSES", help="Passes to skip, e.g. fuse,cse (debugging)."
    ),
    output: Path = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Write to this file instead."
    ),
) -> None:
    """Show the training step's static graph: IR, Graphviz DOT or the generated Python.

    A header gives the node count before and after every optimization pass, the number of
    preallocated buffers and their bytes, and the guards of a model that branches on tensor
    values (traced on the first training batch). Nothing is trained.

    Example: [bold]trainctl graph configs/digits_mlp.yaml --format code[/bold]
    """
    from trainctl.autograd.step_graph import StepOptions
    from trainctl.config import load_config
    from trainctl.graph_view import render_graph
    from trainctl.train.components import build_components

    loaded = load_config(config, overrides)
    parts = build_components(loaded)
    train = parts.data.train
    batch = min(loaded.data.batch_size, len(train))
    batches = parts.loader("train", batch_size=batch).epoch(0)
    first_inputs, first_targets = next(batches)  # read where the model branches on values
    batches.close()
    targets = parts.prepare_targets(first_targets)
    text = render_graph(
        parts.model,
        parts.loss_fn,
        parts.optimizer,
        first_inputs.shape,
        targets.shape,
        targets.dtype,
        device=parts.device,
        dtype=parts.dtype,
        inputs_dtype=first_inputs.dtype,
        options=StepOptions(
            grad_clip=loaded.train.grad_clip,
            disabled_passes=tuple(p.strip() for p in (disable or "").split(",") if p.strip()),
        ),
        stage=stage,
        fmt=fmt,
        batch=(first_inputs, targets),
    )
    if output is None:
        typer.echo(text, nl=False)
        return
    from trainctl.train.atomic import atomic_write_text

    atomic_write_text(output, text)
    typer.echo(f"wrote {output}")
