"""Graph mode: a step traced once per input signature, optimized, compiled and replayed.

The engine's equivalent of `jax.jit` or tinygrad's `TinyJit`. `TracedStep` keeps a cache from
input signature (train or eval, shapes, dtypes) to a compiled program; a miss traces the
`StepDefinition` (`step_graph.py`), runs the passes, allocates the state (`storage.py`) and
compiles. Each replay first copies in any state someone else rebound (a checkpoint load, an
eager step), and afterwards leaves the model and the optimizer pointing at the step's own
arrays, exactly as `opt.step()` would have left them. `render_graph` shows what it builds.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from trainctl.autograd.compile import Program, check_labels, compile_graph
from trainctl.autograd.cublas import load_gemm
from trainctl.autograd.cuda_graphs import CapturedStep
from trainctl.autograd.graph import Graph, format_graph, graph_to_dot
from trainctl.autograd.ops import Spec
from trainctl.autograd.passes import PassRecord, check_pass_names, optimize
from trainctl.autograd.step_graph import LossFn, StepDefinition, StepError, StepOptions
from trainctl.autograd.storage import StateArrays, StateBinding
from trainctl.backend import Device, to_host

log = logging.getLogger("trainctl.graph")


@dataclass
class CompiledStep:
    """One traced and compiled signature: its program and how its state slots bind."""

    signature: tuple
    graph: Graph
    program: Program
    passes: list[PassRecord]
    nodes_traced: int
    state: StateBinding
    updated: list[int] | None = None  # training: indices of the parameters the step updates
    captured: CapturedStep | None = None  # with CUDA graphs

    def run(self, args: list[Any], bound: dict[str, Any]) -> tuple:
        if self.captured is not None:  # on a GPU: the batch is always copied, never bound
            return self.captured(*args)
        return self.program.function(*args, **bound)


class TracedStep:
    """A step definition traced per input signature, compiled, and replayed on owned state.

    `cuda_graphs` replays each compiled step on a GPU as one CUDA graph (`cuda_graphs.py`);
    steps that draw random numbers (dropout) or check numerics are not captured, and
    `stats()` says so.
    """

    def __init__(self, definition: StepDefinition) -> None:
        options, device = definition.options, definition.device
        check_pass_names(options.disabled_passes)
        self.definition = definition
        self.cuda_graphs = (
            options.cuda_graphs
            and device.name == "cuda"
            and options.plan_memory
            and not options.check_numerics
        )
        scalars = options.device_scalars
        self.device_scalars = self.cuda_graphs if scalars is None else scalars
        # CUDA graphs are captured on a stream of their own (never the legacy default one);
        # a blocking stream, so it stays ordered with whatever else runs on the default one.
        self._stream = device.xp.cuda.Stream() if self.cuda_graphs else None
        self.storage = StateArrays(device)
        self._compiled: dict[tuple, CompiledStep] = {}
        self._by_key: dict[tuple, CompiledStep] = {}
        self.traces = 0
        self.trace_seconds = self.compile_seconds = 0.0

    @property
    def compiled(self) -> list[CompiledStep]:
        """The signatures compiled so far (and still valid), in the order they were."""
        return list(self._compiled.values())

    # ------------------------------------------------------------ the step

    def train(self, inputs: Any, targets: Any) -> float:
        """One training step on the batch; returns the loss."""
        compiled = self._lookup("train", inputs, targets)
        model, scaler = self.definition.model, self.definition.options.loss_scaler
        if not model.training:
            model.train()
        with self._on_stream():
            bound = self._load(compiled, inputs, targets)
            scalars = self.definition.scalars()
            args = [scalars[name] for name in compiled.program.scalar_names]
            for generator, _ in compiled.graph.generators:
                args += [generator.seed, generator.counter]
            loss, *finite = compiled.run(args, bound)
            finite = bool(finite[0]) if finite else True
            self._store(compiled, finite)
            if scaler is not None:
                scaler.update(finite)
            return float(loss)

    def evaluate(self, inputs: Any) -> np.ndarray:
        """The model's outputs in eval mode, as a host array."""
        compiled = self._lookup("eval", inputs)
        if self.definition.model.training:
            self.definition.model.eval()
        with self._on_stream():
            bound = self._load(compiled, inputs)
            (out,) = compiled.run([], bound)
            return np.array(to_host(out), copy=True)

    def signature(self, kind: str, *batch: Any) -> tuple:
        """The cache key of a batch (arrays or Specs): float data counts as the step's dtype."""
        parts = []
        for x in batch:
            dtype = np.dtype(x.dtype)
            floating = np.issubdtype(dtype, np.floating)
            parts += [tuple(x.shape), self.definition.dtype if floating else dtype]
        return (kind, *parts)

    def _on_stream(self) -> contextlib.AbstractContextManager:
        return self._stream if self._stream is not None else contextlib.nullcontext()

    def _lookup(self, kind: str, *batch: Any) -> CompiledStep:
        """The compiled step for these arrays: a dict hit on their shapes and dtypes as they
        come; on a miss, the signature they cast to (float data -> the step's dtype)."""
        key = (kind, *[(x.shape, x.dtype) for x in batch])
        compiled = self._by_key.get(key)
        if compiled is None:
            signature = self.signature(kind, *batch)
            compiled = self._compiled.get(signature) or self._build(signature)
            self._by_key[key] = compiled
        return compiled

    def _load(self, compiled: CompiledStep, *batch: Any) -> dict[str, Any]:
        """Bring in any state someone rebound since the last replay; return the batch arrays
        the step can read where they are (C-ordered NumPy arrays of the traced dtype), by
        input name, after copying the others into the step's own input arrays."""
        xp = self.definition.device.xp
        bound = {}
        program = compiled.program
        for index, classes in program.label_checks:
            check_labels(to_host(batch[index]), classes)
        for name, target, array in zip(program.input_names, program.inputs, batch, strict=True):
            if xp is not np:
                target.set(np.ascontiguousarray(to_host(array), dtype=target.dtype))
            elif (
                type(array) is np.ndarray
                and array.dtype == target.dtype
                and array.flags.c_contiguous
            ):
                bound[name] = array
            else:
                np.copyto(target, array, casting="unsafe")
        self.storage.copy_in(compiled.state, self.definition.optimizer)
        return bound

    def _store(self, compiled: CompiledStep, stepped: bool = True) -> None:
        """Point the model and the optimizer at the updated arrays, as opt.step() would;
        a skipped step (`stepped` False: its float16 gradients overflowed) leaves the clock."""
        optimizer = self.definition.optimizer
        self.storage.store(compiled.state, optimizer, compiled.updated)
        if compiled.updated is None:
            return
        optimizer.step_count += int(stepped)
        for generator, draws in compiled.graph.generators:
            generator.counter += draws

    # ------------------------------------------------------------ tracing and compiling

    def _build(self, signature: tuple) -> CompiledStep:
        what = "training" if signature[0] == "train" else "evaluation"
        log.debug("graph mode: tracing the %s step for input signature %s", what, signature[1:])
        start = time.perf_counter()
        graph, updated = self.trace(signature)
        traced = time.perf_counter()
        optimized, records, program = self.compile(graph)
        self.traces += 1
        self.trace_seconds += traced - start
        self.compile_seconds += time.perf_counter() - traced
        state = self.storage.bind(optimized.state)
        compiled = CompiledStep(signature, optimized, program, records, len(graph.nodes), state)
        compiled.updated = updated
        if self.cuda_graphs and program.device_step is not None:
            compiled.captured = CapturedStep(program, self._stream)
        self._compiled[signature] = compiled
        return compiled

    def trace(self, signature: tuple) -> tuple[Graph, list[int] | None]:
        """The graph of a signature, and for training the indices of the parameters it
        updates. Nothing runs: the model, optimizer and generators are left as they were."""
        shapes, dtypes = signature[1::2], signature[2::2]
        specs = [Spec(s, d) for s, d in zip(shapes, dtypes, strict=True)]
        if signature[0] == "train":
            return self.definition.trace_training(*specs)
        return self.definition.trace_evaluation(*specs), None

    def compile(self, graph: Graph) -> tuple[Graph, list[PassRecord], Program]:
        """The optimized graph, its pass records and its program over the step's state."""
        options = self.definition.options
        optimized, records = optimize(graph, options.disabled_passes)
        if self.storage.allocate(optimized.state):  # flat arrays took over existing ones
            self._compiled.clear()
            self._by_key.clear()
        device_scalars = (
            self.device_scalars
            and options.plan_memory
            and not options.check_numerics
            and not optimized.generators
            and (not self.cuda_graphs or load_gemm()[0] is not None)
        )
        program = compile_graph(
            optimized,
            self.storage.arrays,
            options.plan_memory,
            options.check_numerics,
            device_scalars,
        )
        return optimized, records, program

    def stats(self) -> dict[str, Any]:
        """Trace and compile seconds, node counts before/after each pass, buffers and bytes."""
        return {
            "traces": self.traces,
            "trace_seconds": self.trace_seconds,
            "compile_seconds": self.compile_seconds,
            "signatures": [
                {
                    "kind": c.signature[0],
                    "shapes": [list(part) for part in c.signature[1::2]],
                    "nodes_traced": c.nodes_traced,
                    "nodes_optimized": len(c.graph.nodes),
                    "passes": [
                        {"name": r.name, "before": r.nodes_before, "after": r.nodes_after}
                        for r in c.passes
                    ],
                    "buffers": c.program.buffers,
                    "buffer_bytes": c.program.buffer_bytes,
                    **({"cuda_graph": _cuda_graph_status_of(c)} if self.cuda_graphs else {}),
                }
                for c in self._compiled.values()
            ],
        }


def _cuda_graph_status_of(compiled: CompiledStep) -> dict[str, Any]:
    if compiled.captured is not None:
        return {**compiled.captured.status(), "matmul": load_gemm()[1]}
    if compiled.graph.generators:
        reason = "the step draws random numbers (dropout) from host-seeded generators"
    else:
        reason = load_gemm()[1]
    return {"captured": False, "reason": reason}


STAGES = ("traced", "optimized")
FORMATS = ("text", "dot", "code")


def render_graph(
    model: Any,
    loss_fn: LossFn,
    optimizer: Any,
    inputs_shape: Sequence[int],
    targets_shape: Sequence[int],
    targets_dtype: Any,
    *,
    device: Device,
    dtype: Any,
    inputs_dtype: Any = None,
    options: StepOptions | None = None,
    stage: str = "optimized",
    fmt: str = "text",
) -> str:
    """The training step's graph as `trainctl graph` prints it: IR text, Graphviz DOT or the
    generated Python source, under a header of node counts per pass, buffers and bytes.

    `stage="traced"` shows the graph as recorded (its code: one forward call per node);
    nothing runs and the model, optimizer and generators are left as they were.
    """
    if stage not in STAGES:
        raise StepError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    if fmt not in FORMATS:
        raise StepError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    options = replace(options or StepOptions(), plan_memory=stage == "optimized")
    definition = StepDefinition(model, loss_fn, optimizer, device, np.dtype(dtype), options)
    step = TracedStep(definition)
    inputs = Spec(tuple(inputs_shape), np.dtype(inputs_dtype or dtype))
    signature = step.signature("train", inputs, Spec(tuple(targets_shape), targets_dtype))
    traced, _ = step.trace(signature)
    optimized, records, program = step.compile(traced)
    shown = optimized if stage == "optimized" else traced
    if stage == "traced":
        program = compile_graph(traced, step.storage.arrays, plan_memory=False)
    header = [
        f"training step of {type(model).__name__}: inputs {signature[2]}{list(signature[1])}, "
        f"targets {signature[4]}{list(signature[3])}, {device}",
        f"traced: {len(traced.nodes)} nodes",
        *(f"pass {r.name}: {r.nodes_before} -> {r.nodes_after} nodes" for r in records),
        f"optimized: {len(optimized.nodes)} nodes",
        f"buffers: {program.buffers}, {program.buffer_bytes} bytes"
        + ("" if stage == "optimized" else " (the traced stage allocates as it runs)"),
    ]
    if fmt == "code":
        return "\n".join("# " + line for line in header) + "\n" + program.source
    body = format_graph(shown) if fmt == "text" else graph_to_dot(shown)
    comment = "# " if fmt == "text" else "// "
    return "\n".join(comment + line for line in header) + "\n" + body + "\n"
