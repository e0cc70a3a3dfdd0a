"""Graph mode: a step traced once per input signature, optimized, compiled and replayed.

The engine's equivalent of `jax.jit` or tinygrad's `TinyJit`. `TracedStep` caches compiled
programs by input signature (train or eval, shapes, dtypes); a miss traces the `StepDefinition`
(`step_graph.py`) with the batch at hand, runs the passes, allocates the state (`storage.py`)
and compiles. A model that reads tensor values as Python numbers gets guarded traces
(`guards.py`), like `torch.compile`: one per combination of outcomes, each used only when its
guards hold; past `max_traces` of them a step runs eagerly instead.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainctl.autograd.compile import Program, check_labels, compile_graph
from trainctl.autograd.cublas import load_gemm
from trainctl.autograd.cuda_graphs import CapturedStep
from trainctl.autograd.graph import Graph, TracingError
from trainctl.autograd.guards import GuardProgram
from trainctl.autograd.ops import Spec
from trainctl.autograd.passes import PassRecord, check_pass_names, optimize
from trainctl.autograd.step_graph import StepDefinition
from trainctl.autograd.storage import StateArrays, StateBinding
from trainctl.backend import to_host

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
    guards: GuardProgram | None = None  # when the model read values as Python numbers

    def run(self, args: list[Any], bound: dict[str, Any]) -> tuple:
        if self.captured is not None:  # on a GPU: the batch is always copied, never bound
            return self.captured(*args)
        return self.program.function(*args, **bound)


class TracedStep:
    """A step definition traced per input signature, compiled, and replayed on owned state.

    `make_eager()` makes (once, when first needed) an eager step on the same model and
    optimizer, with `train` and `evaluate`: it runs the steps whose guards match none of the
    `max_traces` traces kept for their signature.
    """

    def __init__(
        self, definition: StepDefinition, make_eager: Callable[[], Any] | None = None
    ) -> None:
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
        self._stream = device.xp.cuda.Stream() if self.cuda_graphs else contextlib.nullcontext()
        self.storage = StateArrays(device)
        # signature -> its traces, the one last used first (one unless the model has guards)
        self._compiled: dict[tuple, list[CompiledStep]] = {}
        self._by_key: dict[tuple, list[CompiledStep]] = {}
        self.make_eager, self.max_traces = make_eager, options.max_traces
        self._eager: Any = None
        self.traces = self.guard_checks = self.guard_misses = self.eager_fallbacks = 0
        self.trace_seconds = self.compile_seconds = 0.0

    @property
    def compiled(self) -> list[CompiledStep]:
        """The traces compiled so far (and still valid), by signature in the order first seen."""
        return [compiled for family in self._compiled.values() for compiled in family]

    # ------------------------------------------------------------ the step

    def train(self, inputs: Any, targets: Any) -> float:
        """One training step on the batch; returns the loss."""
        compiled = self._lookup("train", inputs, targets)
        if compiled is None:
            return self._eager.train(inputs, targets)
        model, scaler = self.definition.model, self.definition.options.loss_scaler
        if not model.training:
            model.train()
        with self._stream:
            bound = self._load(compiled, inputs, targets)
            scalars = self.definition.scalars()
            args = [scalars[name] for name in compiled.program.scalar_names]
            args += compiled.graph.keys_now()
            loss, *finite = compiled.run(args, bound)
            finite = bool(finite[0]) if finite else True
            self._store(compiled, finite)
            if scaler is not None:
                scaler.update(finite)
            return float(loss)

    def evaluate(self, inputs: Any) -> np.ndarray:
        """The model's outputs in eval mode, as a host array."""
        compiled = self._lookup("eval", inputs)
        if compiled is None:
            return self._eager.evaluate(inputs)
        if self.definition.model.training:
            self.definition.model.eval()
        with self._stream:
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

    def _lookup(self, kind: str, *batch: Any) -> CompiledStep | None:
        """The compiled step for these arrays: a dict hit on their shapes and dtypes as they
        come; on a miss, the signature they cast to (float data -> the step's dtype). None
        when the step must run eagerly (its guards match no trace, and no more are kept)."""
        key = (kind, *[(x.shape, x.dtype) for x in batch])
        family = self._by_key.get(key)
        if family is None:
            signature = self.signature(kind, *batch)
            family = self._compiled.get(signature)
            if family is None:  # traced on this very batch: its guards hold
                family = self._by_key[key] = self._build(signature, batch)
                return family[0]
            self._by_key[key] = family
        if family[0].guards is None:  # no Python decision on values: the one trace holds
            return family[0]
        return self._guarded(family, batch)

    def _guarded(self, family: list[CompiledStep], batch: Sequence[Any]) -> CompiledStep | None:
        """The first trace whose guards all hold on this batch and the current state (moved to
        the front), else a new trace for it, or None past `max_traces`. Checking changes
        nothing, so a mismatch never applies a wrong update."""
        for index, compiled in enumerate(family):
            guards = compiled.guards
            self.guard_checks += len(guards.guards) if guards is not None else 0
            if guards is None or guards.check(batch):
                family.insert(0, family.pop(index))
                return compiled
            self.guard_misses += 1
        signature = family[0].signature
        if len(family) < self.max_traces:
            return self._build(signature, batch)[0]
        self.eager_fallbacks += 1
        if self.make_eager is None:
            raise TracingError(_overflow_text(signature, self.max_traces, "cannot run"))
        if self._eager is None:
            log.warning(_overflow_text(signature, self.max_traces, "runs eagerly"))
            self._eager = self.make_eager()
        return None

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

    def _build(self, signature: tuple, batch: Sequence[Any] | None = None) -> list[CompiledStep]:
        """Trace and compile `signature` (with `batch`, read where the model reads values);
        returns its traces, the new one first."""
        what = "training" if signature[0] == "train" else "evaluation"
        log.debug("graph mode: tracing the %s step for input signature %s", what, signature[1:])
        start = time.perf_counter()
        graph, updated = self.trace(signature, batch)
        traced = time.perf_counter()
        optimized, records, program = self.compile(graph)
        guards = GuardProgram(graph, graph.guards) if graph.guards else None
        self.traces += 1
        self.trace_seconds += traced - start
        self.compile_seconds += time.perf_counter() - traced
        state = self.storage.bind(optimized.state)
        compiled = CompiledStep(
            signature, optimized, program, records, len(graph.nodes), state, updated, guards=guards
        )
        if self.cuda_graphs and program.device_step is not None:
            compiled.captured = CapturedStep(program, self._stream)
        family = self._compiled.setdefault(signature, [])
        family.insert(0, compiled)
        return family

    def trace(self, signature: tuple, batch: Sequence[Any] | None = None) -> tuple[Graph, Any]:
        """The graph of a signature, and for training the indices of the parameters it
        updates. Nothing runs: the model, optimizer and generators are left as they were.
        With the `batch`, values the model reads as numbers are computed and guarded."""
        specs = [Spec(s, d) for s, d in zip(signature[1::2], signature[2::2], strict=True)]
        if signature[0] == "train":
            return self.definition.trace_training(*specs, batch=batch)
        return self.definition.trace_evaluation(*specs, batch=batch), None

    def compile(self, graph: Graph) -> tuple[Graph, list[PassRecord], Program]:
        """The optimized graph, its pass records and its program over the step's state."""
        options = self.definition.options
        optimized, records = optimize(graph, options.disabled_passes)
        if self.storage.conflicts(optimized.state):
            # Another trace laid this state out flat otherwise (it updates other parameters):
            # this one reads and writes the members where that one keeps them.
            optimized, records = optimize(graph, (*options.disabled_passes, "flatten"))
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
        arrays, plan, check = self.storage.arrays, options.plan_memory, options.check_numerics
        return optimized, records, compile_graph(optimized, arrays, plan, check, device_scalars)

    def stats(self) -> dict[str, Any]:
        """Trace and compile seconds, node counts before/after each pass, buffers and bytes."""
        return {
            "traces": self.traces,
            "trace_seconds": self.trace_seconds,
            "compile_seconds": self.compile_seconds,
            "guard_checks": self.guard_checks,
            "guard_misses": self.guard_misses,
            "eager_fallbacks": self.eager_fallbacks,
            "max_traces": self.max_traces,
            "signatures": [
                {
                    "kind": c.signature[0],
                    "shapes": [list(part) for part in c.signature[1::2]],
                    "guards": c.guards.lines if c.guards is not None else [],
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
                for c in self.compiled
            ],
        }


def _overflow_text(signature: tuple, bound: int, outcome: str) -> str:
    what = "training" if signature[0] == "train" else "evaluation"
    return (
        f"graph mode: the {what} step for inputs {list(signature[1])} branches on tensor values "
        f"in more ways than graph.max_traces={bound} traces (one per combination of guard "
        f"outcomes); a step whose guards match none of them {outcome}: raise the bound with "
        f"--set graph.max_traces=N, or use mode: eager for this model"
    )


def _cuda_graph_status_of(compiled: CompiledStep) -> dict[str, Any]:
    if compiled.captured is not None:
        return {**compiled.captured.status(), "matmul": load_gemm()[1]}
    if compiled.graph.generators:
        reason = "the step draws random numbers (dropout) from host-seeded generators"
    else:
        reason = load_gemm()[1]
    return {"captured": False, "reason": reason}
