"""Flat storage for the eager update: the parameters of one dtype updated as one array.

An update rule is elementwise, so applying it once to the concatenation of several parameters
(and of their gradients and state) gives every element the same bits as applying it to each
parameter alone, in a fixed number of array calls instead of that many per parameter (PyTorch
calls the same idea its "foreach" optimizers). After an update the parameters' `.data` and
their state entries are views of the new flat arrays, which the next update takes as they are
when nothing rebound them in between; a member someone rebound (a checkpoint load, graph mode
taking over, `param.data = ...`) is copied in again by concatenating. Gradients are always
concatenated: backward makes each one separately.

Graph mode traces the update in the same layout (`autograd/step_graph.py`), and its `flatten`
pass keeps the flat arrays flat between steps (`autograd/passes.py`).
"""

from __future__ import annotations

import math
from typing import Any

from trainctl.autograd import Tensor


class FlatGroup:
    """The flat arrays of one set of parameters (same dtype and device), by name: "param" and
    each of the optimizer's state names, with the member views handed out last time."""

    def __init__(self, indices: tuple[int, ...], params: list[Tensor]) -> None:
        self.indices = indices  # the parameters' places in the optimizer's list
        self.shapes = [p.shape for p in params]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.device = params[0].device
        self.flat: dict[str, Any] = {}
        self.views: dict[str, list[Any]] = {}

    def gather(self, name: str, arrays: list[Any]) -> Tensor:
        """The flat `name` array holding `arrays` (one per member): the one kept from the last
        `scatter` when every member still is its view, else their concatenation."""
        views = self.views.get(name)
        if views is None or any(a is not v for a, v in zip(arrays, views, strict=True)):
            return self.concatenate(arrays)
        return Tensor._wrap(self.flat[name], self.device)

    def concatenate(self, arrays: list[Any]) -> Tensor:
        """The members' `arrays` as one flat tensor (a copy; nothing kept)."""
        xp = self.device.xp
        return Tensor._wrap(xp.concatenate([xp.reshape(a, -1) for a in arrays]), self.device)

    def scatter(self, name: str, flat: Tensor) -> list[Any]:
        """Views of `flat` shaped as the members, kept for the next `gather`."""
        views, offset = [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            views.append(flat.data[offset : offset + size].reshape(shape))
            offset += size
        self.flat[name], self.views[name] = flat.data, views
        return views
