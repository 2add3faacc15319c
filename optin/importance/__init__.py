"""Importance methods: callables `method(adapter, batches, cfg) -> Scores`, found by name.

The search and the benchmarks look methods up here and never branch on their names. Every
registered method scores the units beyond a layer's own width (layers narrower than the widest,
as in Swin's early stages) -inf, which the search never keeps.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..errors import BadInput

METHODS: dict = {}


@dataclass(frozen=True)
class ScoreConfig:
    seed: int = 0
    group_size: int = 32      # neurons scored together by the trajectory method
    lam: float = 0.1          # KD weight λ (paper: 0.1 after ablation)
    depth: str = "normalized"  # how per-layer distortions combine; see trajectory.combine
    rows_per_batch: int = 256  # tokens per batch in each Gram matrix (a fixed, seeded subset)
    candidates_per_pass: int = 8  # exact trajectory: candidates sharing one batched forward pass


@dataclass
class Scores:
    """Higher = more important. heads: [layers, heads]; neurons: [layers, ffn]; -inf: a unit the
    layer does not have."""

    heads: torch.Tensor
    neurons: torch.Tensor
    meta: dict = field(default_factory=dict)

    def only_present(self, dims) -> "Scores":
        """Score the units beyond each layer's own width -inf (a no-op for uniform widths)."""
        ph, pn = dims.present()
        self.heads = self.heads.masked_fill(~ph, float("-inf"))
        self.neurons = self.neurons.masked_fill(~pn, float("-inf"))
        return self


def register(name: str, gradients: bool = False):
    """gradients: the method back-propagates through the model (optin.devices.check_dtype refuses
    float16 for it)."""
    def deco(fn):
        @functools.wraps(fn)
        def method(adapter, batches, cfg, *args, **kwargs):
            return fn(adapter, batches, cfg, *args, **kwargs).only_present(adapter.dims())
        method.uses_gradients = gradients
        METHODS[name] = method
        return method
    return deco


def get_method(name: str):
    if name not in METHODS:
        raise BadInput(f"unknown importance method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


from . import baselines, estimate, fast, fisher, trajectory  # noqa: E402,F401  (register the methods)
