"""Dynamic loss scaling for float16 training (Keras's LossScaleOptimizer, torch's GradScaler).

float16's smallest normal number is 6e-5: many gradients of a float16 forward pass would
flush to zero. The step multiplies the loss by `scale` before the backward pass and the
gradients by 1/scale after it, so they are computed large and applied at their true size.
A step whose gradients hold an Inf or NaN (the scale was too large) is skipped, weights and
optimizer state untouched and the optimizer's clock not advanced, and the scale halves;
after `growth_interval` good steps in a row it doubles. Both modes use this one class, and
its state travels in checkpoints so a resumed run scales exactly as the original would have.
"""

from __future__ import annotations

from typing import Any


class LossScaler:
    def __init__(
        self, initial_scale: float = 2.0**15, growth_interval: int = 2000, factor: float = 2.0
    ) -> None:
        if not initial_scale > 0 or growth_interval < 1 or not factor > 1:
            raise ValueError(
                "loss scaling needs initial_scale > 0, growth_interval >= 1, factor > 1"
            )
        self.scale, self.growth_interval, self.factor = (
            float(initial_scale),
            growth_interval,
            factor,
        )
        self.good_steps = 0
        self.skipped = 0

    def step_scalars(self) -> dict[str, float]:
        """The host numbers the next step reads (graph mode takes them as runtime inputs)."""
        return {"loss_scale": self.scale, "inverse_loss_scale": 1.0 / self.scale}

    def update(self, finite: bool) -> None:
        """After a step: grow the scale after enough good steps, shrink it after a bad one."""
        if not finite:
            self.scale /= self.factor
            self.good_steps = 0
            self.skipped += 1
            return
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale *= self.factor
            self.good_steps = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.good_steps, self.skipped = int(state["good_steps"]), int(state["skipped"])
