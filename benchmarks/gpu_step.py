"""Training-step times on an NVIDIA GPU: trainctl eager and graph against PyTorch CUDA.

Every engine trains the identical model (same layers, weights, loss, optimizer) on one
batch of random data of the model's input shape, on `cuda`. PyTorch runs eagerly and under
`torch.compile` (the module compiled; the optimizer step stays eager, as most users have it).
Rounds alternate between the engines; each step is timed to the end of its kernels.

Cases (model:batch): mlp is 784-128-64-10 with SGD momentum, cnn the small CNN of
benchmarks/eager_step.py, cifar10 `configs/cifar10_cnn.yaml` (BatchNorm, residual blocks).

    python benchmarks/gpu_step.py                                   # all four cases
    python benchmarks/gpu_step.py --cases mlp:64 --steps 1000 --no-compile
    python benchmarks/gpu_step.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eager_step import interleaved  # noqa: E402

from trainctl.config import load_config  # noqa: E402
from trainctl.data.dataset import ArrayDataset, DataSplits  # noqa: E402
from trainctl.train.components import Components, build_components  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
HEAD = """name: {name}
seed: 0
data: {{dataset: mnist, path: random-stand-in, batch_size: 64}}
loss: cross_entropy
"""
MODELS = {
    "mlp": """optimizer: {name: sgd, lr: 0.01, momentum: 0.9}
model:
  layers: [flatten, {linear: {out: 128}}, relu, {linear: {out: 64}}, relu, {linear: {out: 10}}]
""",
    "cnn": """optimizer: {name: sgd, lr: 0.01, momentum: 0.9}
model:
  layers:
    - conv2d: {out: 8, kernel: 3, padding: 1}
    - relu
    - max_pool2d: {kernel: 2}
    - conv2d: {out: 16, kernel: 3, padding: 1}
    - relu
    - max_pool2d: {kernel: 2}
    - flatten
    - linear: {out: 10}
""",
}
CONFIG_FILES = {"cifar10": REPO / "configs" / "cifar10_cnn.yaml"}
INPUT_SHAPES = {"mlp": (28, 28, 1), "cnn": (28, 28, 1), "cifar10": (32, 32, 3)}
StepFn = Callable[[], object]


@dataclass(frozen=True)
class Case:
    model: str
    batch_size: int
    device: str
    dtype: str = "float32"

    @property
    def label(self) -> str:
        mixed = " mixed" if self.dtype.startswith("mixed") else ""
        return f"{self.model}:{self.batch_size}{mixed}"


def config_path(model: str, folder: Path) -> Path:
    if model in CONFIG_FILES:
        return CONFIG_FILES[model]
    path = folder / f"{model}.yaml"
    path.write_text(HEAD.format(name=model) + MODELS[model])
    return path


def components_for(path: Path, case: Case, overrides: list[str]) -> Components:
    """The config's components on the case's device, with random data for its data set."""
    settings = [
        f"data.batch_size={case.batch_size}",
        f"device={case.device}",
        f"dtype={case.dtype}",
        "data.transforms=[]",
    ]
    config = load_config(str(path), settings + overrides)
    rng = np.random.default_rng(0)
    size = 2 * case.batch_size
    images = rng.random((size, *INPUT_SHAPES[case.model]), dtype=np.float32)
    train = ArrayDataset(images, rng.integers(0, 10, size), "classification", 10)
    data = DataSplits(train, None, None, config.data.dataset, "random stand-in")
    return build_components(config, with_data=data)


def first_batch(components: Components) -> tuple[np.ndarray, np.ndarray]:
    inputs, targets = next(iter(components.loader("train", training=True).epoch(0)))
    return inputs, components.prepare_targets(targets)


def trainctl_steps(path: Path, case: Case) -> tuple[dict, dict]:
    """Eager, graph launched op by op, and graph replayed as a CUDA graph."""
    steps, notes = {}, {}
    variants = {
        "trainctl eager": ("eager", []),
        "trainctl graph": ("graph", ["graph.cuda_graphs=false"]),
        "graph+cuda graph": ("graph", ["graph.cuda_graphs=true"]),
    }
    for label, (mode, overrides) in variants.items():
        components = components_for(path, case, overrides)
        inputs, targets = first_batch(components)
        step = components.make_step(mode)
        start = time.perf_counter()
        step.train(inputs, targets)
        components.device.synchronize()
        notes[label] = {"first_step_s": time.perf_counter() - start, "step": step}
        steps[label] = lambda s=step, x=inputs, y=targets: s.train(x, y)
    return steps, notes


def capture_note(step) -> str:
    """What the step's CUDA graph holds, read after the timed steps (it captures on the
    second step)."""
    train = [s for s in step.stats().get("signatures", []) if s["kind"] == "train"]
    status = train[0].get("cuda_graph") if train else None
    if not status:
        return "no CUDA graph"
    if not status["captured"]:
        return f"not captured: {status['reason']}"
    nodes = ", ".join(f"{count} {kind}" for kind, count in sorted(status["nodes"].items()))
    return f"one launch replays {nodes or 'the step'}"


def torch_steps(path: Path, case: Case, compile_too: bool) -> tuple[dict, dict]:
    import torch

    from trainctl_peers.torch_peer import TorchPeer

    steps, notes = {}, {}
    variants = ["pytorch eager"] + (["torch.compile"] if compile_too else [])
    for label in variants:
        components = components_for(path, case, [])
        inputs, targets = first_batch(components)
        peer = TorchPeer.from_components(components, device=case.device)
        if label == "torch.compile":
            peer.model = torch.compile(peer.model, dynamic=False)
        start = time.perf_counter()
        try:
            peer.train(inputs, targets)
        except Exception as exc:  # a peer that fails is reported, not fatal to the table
            print(f"{case.label:<18} {label}: failed: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        synchronize()
        notes[label] = {"first_step_s": time.perf_counter() - start}
        steps[label] = lambda p=peer, x=inputs, y=targets: p.train(x, y)
    return steps, notes


def synchronize() -> None:
    """Wait for the kernels of every engine that may have queued some."""
    if "cupy" in sys.modules:
        sys.modules["cupy"].cuda.get_current_stream().synchronize()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="mlp:64,mlp:4096,cnn:64,cifar10:128")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peers")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to try the script out")
    parser.add_argument(
        "--dtypes", default="float32,mixed_float16", help="config dtypes to time each case in"
    )
    args = parser.parse_args()

    from trainctl.backend import cuda_status

    print(f"{cuda_status()}, NumPy {np.__version__}")
    if not args.no_torch:
        import torch

        print(f"PyTorch {torch.__version__} (CUDA {torch.version.cuda})")
    print(f"{args.steps} timed steps per engine after {args.warmup} warm-up, {args.rounds} rounds")
    print(f"{'case':<18} {'engine':<16} {'median ms':>10} {'p90 ms':>8} {'first step s':>13}")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        cases = [
            Case(model, int(size), args.device, dtype)
            for dtype in args.dtypes.split(",")
            for model, size in (text.split(":") for text in args.cases.split(","))
        ]
        for case in cases:
            path = config_path(case.model, Path(folder))
            steps, notes = trainctl_steps(path, case)
            if not args.no_torch:
                more_steps, more_notes = torch_steps(path, case, not args.no_compile)
                steps.update(more_steps)
                notes.update(more_notes)
            timings = interleaved(steps, args.steps, args.warmup, args.rounds, synchronize)
            for label, timing in timings.items():
                first = notes[label]["first_step_s"]
                print(
                    f"{case.label:<18} {label:<16} {timing.median:>10.3f} {timing.p90:>8.3f} "
                    f"{first:>13.2f}",
                    flush=True,
                )
                results.append(
                    {
                        "case": case.label,
                        "dtype": case.dtype,
                        "engine": label,
                        "median_ms": timing.median,
                        "p90_ms": timing.p90,
                        "first_step_s": first,
                    }
                )
            median = {label: t.median for label, t in timings.items()}
            ratios = [
                f"eager/graph {median['trainctl eager'] / median['trainctl graph']:.2f}x",
                f"eager/graph+cuda graph "
                f"{median['trainctl eager'] / median['graph+cuda graph']:.2f}x",
            ]
            if "pytorch eager" in median:
                best = min(median["trainctl graph"], median["graph+cuda graph"])
                ratios.append(f"best graph/pytorch {best / median['pytorch eager']:.2f}x")
            print(f"{case.label:<18} ratios: {', '.join(ratios)}", flush=True)
            captured = notes["graph+cuda graph"]["step"]
            print(f"{case.label:<18} CUDA graph: {capture_note(captured)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
