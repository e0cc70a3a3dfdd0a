"""Optimizers (SGD, Adam, AdamW, RMSprop) and learning-rate schedules.

Eager use, PyTorch style::

    opt = SGD(model.parameters(), lr=0.1, momentum=0.9,
              schedule=make_schedule("cosine", 0.1, total_steps=900, warmup_steps=100))
    loss.backward(); opt.step(); opt.zero_grad()

A config names them instead: `OPTIMIZER_ENTRIES` and `SCHEDULE_ENTRIES` declare the arguments
of each (the config loader checks user values against them).

Each optimizer is a pure update rule plus a small eager loop, so graph mode can append the
update to a traced training step without running any of the eager code:

- `opt.update_rule(param, grad, state, **scalars) -> (new_param, new_state)` computes one
  parameter's update with Python operators and `trainctl.autograd.ops` only (no `.data`, no
  in-place writes, no `if` on values), so it traces on symbolic values. `state` maps each of
  `opt.state_names` to an operand of the parameter's shape and dtype; all state starts at zero.
- `opt.step_scalars()` gives the host floats the NEXT update needs (`lr` from the schedule, and
  e.g. Adam's `bias_correction1/2`), without mutating anything. Graph mode feeds them in as
  runtime inputs every step, as Python floats: a trace sees them as `HostScalar`s (weakly
  typed, like the numbers eager mode passes), so `lr / bias_correction1` is computed on the
  host in both modes and never promotes float32 parameters. Hyperparameters (momentum, betas,
  eps, weight_decay, nesterov...) are attributes read at trace time, i.e. frozen into a
  compiled step.
- `opt.step()` applies the rule once per dtype, to the parameters (and gradients and state)
  of that dtype laid out in one flat array (`flat.py`): elementwise, so the same bits as one
  update per parameter. Afterwards `param.data` and the state entries are views of the flat
  arrays; anything rebound in between is concatenated in again at the next step.
- After running an update, graph mode writes the results back the way `opt.step()` does:
  `param.data = new_param`, `opt.state[index] = {name: Tensor}` for the parameter's index in
  `opt.params`, then `opt.step_count += 1`. `state_dict()`, `lr` and the schedule then stay
  correct, and a checkpoint resumes identically in either mode.
"""

from trainctl.optim.entries import (
    OPTIMIZER_ENTRIES,
    SCHEDULE_ENTRIES,
    optimizer_conflicts,
    schedule_conflicts,
)
from trainctl.optim.loss_scale import LossScaler
from trainctl.optim.optimizers import (
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    Optimizer,
    RMSprop,
    make_optimizer,
)
from trainctl.optim.schedules import (
    SCHEDULES,
    ConstantLR,
    CosineLR,
    ExponentialLR,
    LinearWarmup,
    MultiStepLR,
    Schedule,
    StepLR,
    make_schedule,
)

__all__ = [
    "OPTIMIZERS",
    "OPTIMIZER_ENTRIES",
    "SCHEDULES",
    "SCHEDULE_ENTRIES",
    "SGD",
    "Adam",
    "AdamW",
    "ConstantLR",
    "CosineLR",
    "ExponentialLR",
    "LinearWarmup",
    "LossScaler",
    "MultiStepLR",
    "Optimizer",
    "RMSprop",
    "Schedule",
    "StepLR",
    "make_optimizer",
    "make_schedule",
    "optimizer_conflicts",
    "schedule_conflicts",
]
