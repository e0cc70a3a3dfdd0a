"""Every op case run on the GPU against the same case on the CPU, in float32 and float64.

The finite-difference checks already run on `cuda` (the `device` fixture); this file holds
the two devices against each other, so a kernel that is self-consistent but computes the
wrong thing on CuPy (a different rounding rule, tie-break or reduction order) shows up.
Skipped without CuPy and a GPU.
"""

import numpy as np
import pytest
from autograd_cases import FORWARD_CASES, GRAD_CASES, Case
from devices import CUDA_ONLY

from trainctl.autograd import Tensor, tensor
from trainctl.backend import get_device, to_host

pytestmark = CUDA_ONLY

# Dropout masks are drawn on the device (reproducible per device, not across devices).
PER_DEVICE_RANDOM = {"dropout"}
GRAD = [case for op, cases in GRAD_CASES.items() if op not in PER_DEVICE_RANDOM for case in cases]
FORWARD = [case for cases in FORWARD_CASES.values() for case in cases]
# float32 on two devices: GEMMs and reductions sum in different orders.
TOLERANCES = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def _leaves(arrays: list[np.ndarray], dtype, device) -> list[Tensor]:
    """Float inputs become differentiable leaves of `dtype`; integer ones stay constants."""
    return [
        tensor(a.astype(dtype), dtype, device, requires_grad=True)
        if np.issubdtype(a.dtype, np.floating)
        else tensor(a, device=device)
        for a in arrays
    ]


def _run(case: Case, dtype, device_name: str, backward: bool):
    device = get_device(device_name)
    xs = _leaves(case.arrays(), dtype, device)
    out = case.fn(*xs)
    grads = []
    if backward:
        weights = np.random.default_rng(1).standard_normal(out.shape)
        (out * Tensor(weights, dtype=out.dtype, device=device)).sum().backward()
        grads = [to_host(x.grad.data) for x in xs if x.requires_grad and x.grad is not None]
    return to_host(out.data), grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", GRAD, ids=lambda c: c.id)
def test_forward_and_gradient_agree_with_cpu(case: Case, dtype):
    cpu_out, cpu_grads = _run(case, dtype, "cpu", backward=True)
    gpu_out, gpu_grads = _run(case, dtype, "cuda", backward=True)
    assert gpu_out.dtype == cpu_out.dtype and gpu_out.shape == cpu_out.shape
    np.testing.assert_allclose(gpu_out, cpu_out, **TOLERANCES[dtype])
    assert len(gpu_grads) == len(cpu_grads)
    for gpu_grad, cpu_grad in zip(gpu_grads, cpu_grads, strict=True):
        assert gpu_grad.dtype == cpu_grad.dtype
        np.testing.assert_allclose(gpu_grad, cpu_grad, **TOLERANCES[dtype])


@pytest.mark.parametrize("case", FORWARD, ids=lambda c: c.id)
def test_forward_only_ops_agree_with_cpu(case: Case):
    cpu_out, _ = _run(case, np.float32, "cpu", backward=False)
    gpu_out, _ = _run(case, np.float32, "cuda", backward=False)
    assert gpu_out.dtype == cpu_out.dtype and gpu_out.shape == cpu_out.shape
    np.testing.assert_allclose(gpu_out, cpu_out, **TOLERANCES[np.float32])
