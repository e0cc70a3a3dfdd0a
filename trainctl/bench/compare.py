"""`trainctl compare`: the config's training step in eager and graph mode, side by side.

What makes the figures honest:
- every mode starts from the same weights (same seed) and runs the same precomputed batches,
  so data loading is outside the step time (it is measured and reported apart);
- a step is the whole step, optimizer update included, timed one by one with a monotonic
  clock and a device synchronize on CUDA;
- modes take turns in rounds (the order alternating each round), so machine drift hits all
  of them alike; the speedup is a ratio of medians with a bootstrap interval and the range
  of per-round ratios;
- trace and compile time is reported apart from steady-state steps;
- memory, op counts and the per-op profile come from separate passes after the timed ones,
  so their instrumentation never touches the headline numbers;
- agreement is checked on the losses of every step and on the final parameters, and a
  disagreement beyond tolerance fails the command.
"""

from __future__ import annotations

import dataclasses
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainctl.autograd.tensor import observe_ops
from trainctl.backend import Device, to_host
from trainctl.bench.timing import Timing
from trainctl.config import Config
from trainctl.errors import TrainctlError
from trainctl.train.components import Components, build_components
from trainctl.train.environment import environment_info
from trainctl.train.threads import controlled_threads

MODES = ("eager", "graph")


class CompareError(TrainctlError):
    """A comparison that cannot run as asked."""


class DisagreementError(TrainctlError):
    """The modes computed different numbers: graph mode (or the peer) is wrong somewhere."""

    exit_code = 1


@dataclass
class CompareOptions:
    steps: int = 60
    warmup: int = 5
    rounds: int = 4
    batch_sizes: Sequence[int] | None = None  # None: the config's batch size
    modes: Sequence[str] = MODES
    eval: bool = False
    profile: bool = False
    with_torch: bool = False
    loss_rtol: float = 1e-6
    param_atol: float = 1e-5
    # A peer framework rounds differently (other kernels, other summation orders); float32
    # rounding compounds through adaptive optimizers, so its check is looser.
    peer_loss_rtol: float = 1e-4
    peer_param_atol: float = 1e-3
    seed: int = 0  # of the bootstrap resampling
    threads: int | None = None  # set by `compare` from the config's `threads`

    def check(self) -> None:
        if self.steps < 1 or self.warmup < 0 or self.rounds < 1:
            raise CompareError("--steps and --rounds must be >= 1 and --warmup >= 0")
        if self.steps < self.rounds:
            raise CompareError(f"--steps ({self.steps}) must be at least --rounds ({self.rounds})")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise CompareError(f"--modes takes a list of {', '.join(MODES)}, got {unknown}")
        if self.batch_sizes is not None and (
            not self.batch_sizes or any(b < 1 for b in self.batch_sizes)
        ):
            raise CompareError("--batch-sizes takes positive integers, e.g. 16,64,256")
        tolerances = {"--loss-rtol": self.loss_rtol, "--param-atol": self.param_atol}
        for option, value in tolerances.items():
            if not 0 <= value < float("inf"):  # NaN fails too
                raise CompareError(f"{option} takes a finite number >= 0, got {value}")


@dataclass
class Runner:
    """One contestant: a step function over host batches, and how to read its parameters."""

    label: str
    train: Callable[[np.ndarray, np.ndarray], float]
    evaluate: Callable[[np.ndarray], np.ndarray]
    parameters: Callable[[], dict[str, np.ndarray]]
    device: Device | None = None
    components: Components | None = None
    step: Any = None
    losses: list[float] = field(default_factory=list)
    first_step_s: float = 0.0
    samples_ms: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    position: int = 0

    def synchronize(self) -> None:
        if self.device is not None:
            self.device.synchronize()

    def run(self, batch: tuple[np.ndarray, np.ndarray]) -> float:
        loss = self.train(*batch)
        self.losses.append(loss)
        return loss


def _stats(samples_ms: Sequence[float]) -> dict[str, float]:
    timing = Timing(tuple(samples_ms))
    return {
        "median": round(timing.median, 4),
        "p10": round(timing.p10, 4),
        "p90": round(timing.p90, 4),
        "mean": round(float(np.mean(samples_ms)), 4),
        "min": round(float(np.min(samples_ms)), 4),
        "max": round(float(np.max(samples_ms)), 4),
        "count": len(samples_ms),
    }


def bootstrap_ratio(
    numerator: Sequence[float], denominator: Sequence[float], seed: int, draws: int = 1000
) -> tuple[float, float]:
    """5th and 95th percentile of median(numerator) / median(denominator) under resampling."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(numerator), np.asarray(denominator)
    ratios = [
        np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(draws)
    ]
    return float(np.percentile(ratios, 5)), float(np.percentile(ratios, 95))


def _mode_runner(components: Components, mode: str) -> Runner:
    step = components.make_step(mode)
    model = components.model

    def parameters() -> dict[str, np.ndarray]:
        return {name: np.array(to_host(t.data)) for name, t in model.named_parameters()}

    def train(inputs: np.ndarray, targets: np.ndarray) -> float:
        return step.train(inputs, components.prepare_targets(targets))

    return Runner(mode, train, step.evaluate, parameters, components.device, components, step)


def _torch_runner(components: Components) -> tuple[Runner, Any]:
    from trainctl.bench.peers import load_torch_peer

    peer = load_torch_peer().from_components(components)

    def parameters() -> dict[str, np.ndarray]:
        names = dict(components.model.named_parameters())
        return {k: v for k, v in peer.trainctl_state().items() if k in names}

    def train(inputs: np.ndarray, targets: np.ndarray) -> float:
        return peer.train(inputs, components.prepare_targets(targets))

    return Runner("torch", train, peer.evaluate, parameters), peer


def _with_batch_size(config: Config, batch_size: int | None) -> Config:
    if batch_size is None:
        return config
    data = dataclasses.replace(config.data, batch_size=batch_size)
    return dataclasses.replace(config, data=data)


def _batches(components: Components, count: int) -> tuple[list, list[float]]:
    """`count` training batches in order (epochs roll over), and the time each took."""
    loader = components.loader("train", training=True)
    batches, times = [], []
    epoch = 0
    while len(batches) < count:
        iterator = loader.epoch(epoch)
        while len(batches) < count:
            started = time.perf_counter()
            batch = next(iterator, None)
            if batch is None:
                break
            times.append((time.perf_counter() - started) * 1e3)
            batches.append(batch)
        iterator.close()
        epoch += 1
    return batches, times


def _time_rounds(runners: list[Runner], batches: list, options: CompareOptions) -> None:
    per_round = [options.steps // options.rounds] * options.rounds
    per_round[-1] += options.steps - sum(per_round)
    for round_index, count in enumerate(per_round):
        order = runners if round_index % 2 == 0 else runners[::-1]
        for runner in order:
            round_samples = []
            for _ in range(count):
                batch = batches[runner.position]
                runner.position += 1
                runner.synchronize()
                started = time.perf_counter()
                runner.run(batch)
                runner.synchronize()
                round_samples.append((time.perf_counter() - started) * 1e3)
            runner.samples_ms.extend(round_samples)
            runner.round_medians.append(float(np.median(round_samples)))


def _agreement(
    reference: Runner, other: Runner, loss_rtol: float, param_atol: float
) -> dict[str, Any]:
    ref, got = np.array(reference.losses), np.array(other.losses)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(ref - got) / np.maximum(np.abs(ref), np.finfo(np.float64).tiny)
    ref_params, got_params = reference.parameters(), other.parameters()
    param_diff = max(
        (float(np.max(np.abs(ref_params[k] - got_params[k]), initial=0.0)) for k in ref_params),
        default=0.0,
    )
    first_bad = next((i for i, r in enumerate(rel) if not r <= loss_rtol), None)
    return {
        "reference": reference.label,
        "max_loss_rel_diff": float(np.max(rel)) if rel.size else 0.0,
        "first_step_beyond_tolerance": None if first_bad is None else first_bad + 1,
        "max_param_abs_diff": param_diff,
        "loss_rtol": loss_rtol,
        "param_atol": param_atol,
        "ok": first_bad is None and param_diff <= param_atol,
    }


def _peak_bytes(runner: Runner, batch: tuple[np.ndarray, np.ndarray]) -> int | None:
    """Peak bytes allocated during one more step (tracemalloc, or CuPy's pool on CUDA)."""
    device = runner.device
    if device is not None and device.name == "cuda":
        from trainctl.bench.cuda_memory import peak_pool_bytes

        return peak_pool_bytes(lambda: runner.run(batch))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        runner.run(batch)
        return max(0, tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()


def _ops_per_step(runner: Runner, batch: tuple[np.ndarray, np.ndarray]) -> dict[str, int]:
    counts: Counter = Counter()
    with observe_ops(lambda op, seconds: counts.update([op.name])):
        runner.run(batch)
    return dict(counts)


def profile_eager(runner: Runner, batches: list, steps: int) -> dict[str, Any]:
    """Where eager time goes: each op's compute (synchronized) vs everything else."""
    seconds: Counter = Counter()
    calls: Counter = Counter()

    def record(op: Any, elapsed: float) -> None:
        seconds[op.name] += elapsed
        calls[op.name] += 1

    started = time.perf_counter()
    with observe_ops(record):
        for i in range(steps):
            runner.run(batches[i % len(batches)])
    total = time.perf_counter() - started
    compute = sum(seconds.values())
    ops = [
        {
            "op": name,
            "calls_per_step": calls[name] / steps,
            "ms_per_step": round(seconds[name] / steps * 1e3, 4),
            "share": round(seconds[name] / total, 4),
        }
        for name, _ in seconds.most_common()
    ]
    return {
        "steps": steps,
        "step_ms": round(total / steps * 1e3, 4),
        "op_compute_ms": round(compute / steps * 1e3, 4),
        "framework_overhead_ms": round((total - compute) / steps * 1e3, 4),
        "ops": ops,
        "note": "a separate instrumented pass: times are inflated by the per-op timers",
    }


def _eval_timing(runner: Runner, inputs: np.ndarray, options: CompareOptions) -> dict[str, Any]:
    for _ in range(max(1, options.warmup)):
        runner.evaluate(inputs)
    samples = []
    for _ in range(options.steps):
        runner.synchronize()
        started = time.perf_counter()
        runner.evaluate(inputs)
        runner.synchronize()
        samples.append((time.perf_counter() - started) * 1e3)
    return _stats(samples)


def _mode_details(runner: Runner, batch_size: int) -> dict[str, Any]:
    timing = _stats(runner.samples_ms)
    details: dict[str, Any] = {
        "first_step_ms": round(runner.first_step_s * 1e3, 3),
        "step_ms": timing,
        "samples_per_s": round(batch_size / (timing["median"] / 1e3), 1),
        "samples_ms": [round(x, 4) for x in runner.samples_ms],
    }
    step_stats = runner.step.stats() if runner.step is not None else {}
    if step_stats:
        signatures = step_stats["signatures"]
        train_sigs = [s for s in signatures if s["kind"] == "train"]
        main = train_sigs[0] if train_sigs else signatures[0]
        details.update(
            trace_compile_s=round(step_stats["trace_seconds"] + step_stats["compile_seconds"], 4),
            trace_s=round(step_stats["trace_seconds"], 4),
            compile_s=round(step_stats["compile_seconds"], 4),
            traces=step_stats["traces"],
            nodes_traced=main["nodes_traced"],
            nodes_optimized=main["nodes_optimized"],
            passes=main["passes"],
            buffers=main["buffers"],
            buffer_bytes=main["buffer_bytes"],
        )
        if "cuda_graph" in main:
            details["cuda_graph"] = main["cuda_graph"]
        if any(s["guards"] for s in signatures):
            details["guards"] = _guard_figures(step_stats, len(runner.losses))
    return details


def _guard_figures(step_stats: dict[str, Any], steps: int) -> dict[str, Any]:
    """What Python control flow on values cost graph mode over the steps run so far: traces
    (one per signature and guard outcome), guard checks before replays, eager fallbacks."""
    return {
        "steps": steps,
        "traces": step_stats["traces"],
        "guard_checks": step_stats["guard_checks"],
        "guard_misses": step_stats["guard_misses"],
        "eager_fallbacks": step_stats["eager_fallbacks"],
        "max_traces": step_stats["max_traces"],
        "guards_per_trace": [len(s["guards"]) for s in step_stats["signatures"]],
    }


def measure(config: Config, batch_size: int | None, options: CompareOptions) -> dict[str, Any]:
    """Every figure for one batch size: timings, agreement, memory, ops, optional profile."""
    config = _with_batch_size(config, batch_size)
    base = build_components(config)
    data = base.data
    runners = []
    for mode in options.modes:
        components = base if not runners else build_components(config, with_data=data)
        runners.append(_mode_runner(components, mode))
    peer = None
    if options.with_torch:
        torch_runner, peer = _torch_runner(build_components(config, with_data=data))
        torch_threads_before = peer.use_threads(options.threads)
        runners.append(torch_runner)
    size = config.data.batch_size
    total = 1 + options.warmup + options.steps
    batches, batch_ms = _batches(base, total + 1)

    for runner in runners:  # the first step: traces and compiles in graph mode
        runner.synchronize()
        started = time.perf_counter()
        runner.run(batches[0])
        runner.synchronize()
        runner.first_step_s = time.perf_counter() - started
        for i in range(options.warmup):
            runner.run(batches[1 + i])
        runner.position = 1 + options.warmup
    _time_rounds(runners, batches, options)

    result: dict[str, Any] = {
        "batch_size": size,
        "data": {"batch_ms": _stats(batch_ms), "excluded_from_step_time": True},
        "modes": {r.label: _mode_details(r, size) for r in runners},
    }
    reference = runners[0]
    result["agreement"] = {
        r.label: _agreement(reference, r, options.loss_rtol, options.param_atol)
        for r in runners[1:]
        if r.label in MODES
    }
    if peer is not None:
        torch_agreement = _agreement(
            reference, runners[-1], options.peer_loss_rtol, options.peer_param_atol
        )
        torch_agreement["comparable"] = peer.comparable
        torch_agreement["reason"] = peer.reason
        if not peer.comparable:
            torch_agreement["ok"] = None
        result["agreement"]["torch"] = torch_agreement
        result["modes"]["torch"].update(version=peer.version, threads=peer.threads)
    result["speedup"] = {}
    if "eager" in result["modes"]:
        eager = next(r for r in runners if r.label == "eager")
        for other in runners:
            if other is eager:
                continue
            low, high = bootstrap_ratio(eager.samples_ms, other.samples_ms, options.seed)
            rounds = np.array(eager.round_medians) / np.array(other.round_medians)
            result["speedup"][f"{other.label}_vs_eager"] = {
                "ratio": round(float(np.median(eager.samples_ms) / np.median(other.samples_ms)), 4),
                "bootstrap_90": [round(low, 4), round(high, 4)],
                "rounds_min_max": [round(float(rounds.min()), 4), round(float(rounds.max()), 4)],
            }

    # Instrumented passes, after the timed ones and the agreement check.
    last = batches[-1]
    for runner in runners:
        details = result["modes"][runner.label]
        details["peak_step_bytes"] = _peak_bytes(runner, last) if runner.label in MODES else None
    for runner in runners:
        if runner.label == "eager":
            ops = _ops_per_step(runner, last)
            result["modes"]["eager"]["ops_per_step"] = sum(ops.values())
            result["modes"]["eager"]["ops_by_name"] = dict(sorted(ops.items()))
    if options.eval:
        for runner in runners:
            result["modes"][runner.label]["eval_ms"] = _eval_timing(runner, last[0], options)
    if options.profile and "eager" in options.modes:
        eager = next(r for r in runners if r.label == "eager")
        result["profile"] = profile_eager(eager, batches, min(options.steps, 30))
    if peer is not None:
        peer.use_threads(torch_threads_before)
    return result


def compare(config: Config, options: CompareOptions) -> dict[str, Any]:
    """The whole comparison as a JSON-ready dict; `ok` is False when any pair disagrees."""
    options.check()
    started = time.time()
    # Every engine runs on the same number of threads, fixed for the whole comparison.
    with controlled_threads(config.threads) as threads:
        options.threads = threads.threads
        results = [measure(config, size, options) for size in (options.batch_sizes or [None])]
    # Only graph vs eager decides: they run the same kernels and must agree to rounding. A
    # peer framework's figures are reported, but it rounds its own way and cannot fail us.
    ok = all(a["ok"] is not False for r in results for m, a in r["agreement"].items() if m in MODES)
    return {
        "name": config.name,
        "config": config.source,
        "device": config.device,
        "dtype": config.dtype,
        "seed": config.seed,
        "dataset": config.data.dataset,
        "options": {
            "steps": options.steps,
            "warmup": options.warmup,
            "rounds": options.rounds,
            "modes": list(options.modes),
            "with_torch": options.with_torch,
            "eval": options.eval,
            "profile": options.profile,
        },
        "machine": environment_info(),
        "threads": options.threads,
        "results": results,
        "ok": ok,
        "duration_s": round(time.time() - started, 2),
    }
