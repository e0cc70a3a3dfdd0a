"""trainctl's autograd engine: primitive ops, the eager Tensor and its tape."""

from trainctl.autograd import ops
from trainctl.autograd.tensor import Tensor, is_grad_enabled, no_grad, ones, tensor, zeros

__all__ = ["Tensor", "is_grad_enabled", "no_grad", "ones", "ops", "tensor", "zeros"]
