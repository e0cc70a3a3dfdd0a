"""The training step of a trainctl config in PyTorch CPU eager: the peer column of
`trainctl compare --with torch`.

Built from the trainctl components it is compared with, it starts from the same weights
(and optimizer state), feeds the same batches through the same layers, loss, gradient
clipping, optimizer and learning-rate schedule, and offers the same `train` / `evaluate`
calls as trainctl's steps, so it is timed the same way and its losses can be checked
against trainctl's. torch's thread count is left at its default, as a PyTorch user has it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainctl.backend import to_host
from trainctl.optim import SGD, Adam, AdamW, Optimizer, RMSprop
from trainctl.train.components import Components
from trainctl_peers import PeerError
from trainctl_peers.torch_model import Slot, TorchModel, build_torch_model

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
_AUTOCAST = {"mixed_float16": torch.float16, "mixed_bfloat16": torch.bfloat16}


def _loss_fn(name: str, args: dict[str, Any]) -> LossFn:
    if name == "cross_entropy":
        smoothing = args.get("label_smoothing", 0.0)
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=smoothing)
    if name == "sequence_cross_entropy":
        smoothing = args.get("label_smoothing", 0.0)
        return lambda out, y: F.cross_entropy(
            out.reshape(-1, out.shape[-1]), y.reshape(-1), label_smoothing=smoothing
        )
    if name == "mse":
        return F.mse_loss
    if name == "bce_with_logits":
        return F.binary_cross_entropy_with_logits
    raise PeerError(f"loss: the torch peer has no equivalent of loss {name!r}")


def _torch_optimizer(source: Optimizer, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """torch.optim's version of `source` with its hyperparameters and next learning rate."""
    lr = source.lr
    if isinstance(source, SGD):
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=source.momentum,
            dampening=source.dampening,
            weight_decay=source.weight_decay,
            nesterov=source.nesterov,
        )
    if isinstance(source, Adam):  # AdamW too: the same arguments
        kind = torch.optim.AdamW if isinstance(source, AdamW) else torch.optim.Adam
        return kind(
            params,
            lr=lr,
            betas=(source.beta1, source.beta2),
            eps=source.eps,
            weight_decay=source.weight_decay,
        )
    if isinstance(source, RMSprop):
        return torch.optim.RMSprop(
            params,
            lr=lr,
            alpha=source.alpha,
            eps=source.eps,
            weight_decay=source.weight_decay,
            momentum=source.momentum,
            centered=source.centered,
        )
    raise PeerError(f"optimizer: the torch peer has no equivalent of optimizer {source.kind!r}")


def _copy_optimizer_state(
    source: Optimizer, target: torch.optim.Optimizer, slots: list[Slot]
) -> None:
    """Carry trainctl's per-parameter state over (`slots` in the order of `source.params`), so
    a peer built in the middle of a run continues it. The state names are torch's; torch's
    Adam and RMSprop also count steps per parameter, where trainctl's clock is global."""
    counts_steps = isinstance(source, (Adam, RMSprop))
    for index, entry in source.state.items():
        slot = slots[index]
        state = {
            name: torch.tensor(slot.to_torch(t.numpy()), device=slot.tensor.device)
            for name, t in entry.items()
        }
        if counts_steps:
            state["step"] = torch.tensor(float(source.step_count))
        target.state[slot.tensor] = state


class TorchPeer:
    """The config's model, loss and optimizer in PyTorch, started from trainctl's weights.

    `comparable` is False (and `reason` says why) when its losses cannot be expected to
    agree with trainctl's, e.g. with dropout; it still trains and can be timed. `version` and
    `threads` say which torch ran, on how many threads.
    """

    version: str = str(torch.__version__)

    def __init__(
        self,
        model: TorchModel,
        optimizer: torch.optim.Optimizer,
        components: Components,
        step_count: int,
        device: torch.device,
    ) -> None:
        self.model, self.optimizer = model.module, optimizer
        self.device = device
        self.reason = model.reason
        self.comparable = model.reason is None
        self.step_count = step_count
        self.threads = torch.get_num_threads()  # worth reporting beside a timing
        self._slots = model.slots
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        self._schedule = components.optimizer.schedule
        self._loss_fn = _loss_fn(components.config.loss.name, components.config.loss.args)
        self._prepare_targets = components.prepare_targets
        self._grad_clip = components.config.train.grad_clip
        self._dtype = np.dtype(components.dtype)

        # Mixed precision the PyTorch way: autocast, and a GradScaler for float16.
        self._autocast = _AUTOCAST.get(components.config.dtype)
        self._scaler = None
        if self._autocast == torch.float16:
            self._scaler = torch.amp.GradScaler(device.type)
        if self._autocast is not None:
            self.reason = "mixed precision: PyTorch's autocast picks its own ops to run in 16 bits"
            self.comparable = False

    def use_threads(self, threads: int | None) -> int:
        """Run on `threads` intra-op threads (None: as before), as trainctl does; returns
        the count before, to give back when done (torch's setting is process-wide)."""
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        return before

    @classmethod
    def from_components(cls, components: Components, device: str = "cpu") -> TorchPeer:
        """The peer of `components` as they are now: weights, buffers, optimizer state and
        schedule position copied over, on torch's `device` (cpu, or cuda for GPU peers)."""
        dtype = np.dtype(components.dtype)
        input_ndim = len(components.data.input_shape) + 1
        kind = components.config.model.kind
        if kind != "layers":
            raise PeerError(f"model.{kind}: the torch peer copies layer lists (model.layers) only")
        layer_specs = components.config.model.layers
        model = build_torch_model(layer_specs, components.model, input_ndim, _DTYPES[dtype])
        state = {name: to_host(value) for name, value in components.model.state_dict().items()}
        with torch.no_grad():
            for slot in model.slots:
                slot.tensor.copy_(torch.tensor(slot.to_torch(state[slot.name])))
        model.module.to(device)  # moves the parameters in place: the slots still hold them
        source = components.optimizer
        by_name = {slot.name: slot for slot in model.slots}
        names = {id(p): name for name, p in components.model.named_parameters()}
        param_slots = [by_name[names[id(p)]] for p in source.params]
        optimizer = _torch_optimizer(source, [slot.tensor for slot in param_slots])
        _copy_optimizer_state(source, optimizer, param_slots)
        return cls(model, optimizer, components, source.step_count, torch.device(device))

    def train(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """One step (forward, loss, backward, clipping, update); returns the loss before it.

        Targets may be raw labels or already prepared: `prepare_targets` leaves prepared ones
        as they are.
        """
        x = self._tensor(inputs)
        y = self._tensor(self._prepare_targets(targets))
        self.model.train()
        self.optimizer.zero_grad()
        if self._autocast is None:
            loss = self._loss_fn(self.model(x), y)
        else:
            with torch.autocast(self.device.type, dtype=self._autocast):
                loss = self._loss_fn(self.model(x).float(), y)
        scaler = self._scaler
        (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        if self._grad_clip is not None:
            # torch's formula is trainctl's: scale = min(1, clip / (norm + 1e-6)).
            torch.nn.utils.clip_grad_norm_(self._params, self._grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = self._schedule.lr_at(self.step_count)
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()
        self.step_count += 1
        return loss.item()

    def evaluate(self, inputs: np.ndarray) -> np.ndarray:
        """The model's outputs in eval mode (running batch-norm statistics, no dropout)."""
        self.model.eval()
        with torch.no_grad():
            out = self.model(self._tensor(inputs))
        return np.array(out.cpu().numpy(), order="C")

    def trainctl_state(self) -> dict[str, np.ndarray]:
        """Parameters and buffers under trainctl's state_dict names, in trainctl's layouts."""
        return {
            slot.name: np.array(slot.to_trainctl(slot.tensor.detach().cpu().numpy()), order="C")
            for slot in self._slots
        }

    def _tensor(self, array: Any) -> torch.Tensor:
        """A batch as torch sees it: floating data in the run's dtype, integers as int64."""
        array = np.asarray(array)
        kind = self._dtype if np.issubdtype(array.dtype, np.floating) else np.int64
        return torch.from_numpy(array.astype(kind, copy=False)).to(self.device)
