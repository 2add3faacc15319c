"""Analytic MAC counts of a (pruned) transformer encoder, and an fvcore cross-check.

Per layer, at sequence length n (tokens; for a ViT, patches + [CLS]), hidden size d, head size d_h (Kwon et al. 2022, eq. in §4.1):
    heads · (4·n·d·d_h + 2·n²·d_h)  +  neurons · (2·n·d)
q, k, v and output projections give 4·n·d·d_h per head; Q·Kᵀ and A·V give 2·n²·d_h.
One multiply-add is one MAC; FLOPs = 2 · MACs. Embedding lookups, LayerNorm, softmax and
activations are not counted (fvcore does not count them either).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CostModel:
    """Linear cost of one example (MACs, or ms for a latency model): fixed + Σ_layers heads·per_head + neurons·per_neuron."""

    per_head: tuple[float, ...]
    per_neuron: tuple[float, ...]
    fixed: float
    seq_len: int

    def total(self, heads, neurons) -> float:
        return self.fixed + sum(h * a + n * b for h, n, a, b in zip(heads, neurons, self.per_head, self.per_neuron))


def mac_cost_model(num_layers: int, hidden: int, head_dim: int, seq_len: int, fixed: int) -> CostModel:
    n, d = seq_len, hidden
    per_head = 4 * n * d * head_dim + 2 * n * n * head_dim
    per_neuron = 2 * n * d
    return CostModel((per_head,) * num_layers, (per_neuron,) * num_layers, fixed, seq_len)


MATMUL_OPS = ("linear", "matmul", "bmm", "einsum", "addmm", "conv")  # conv: a ViT patch embedding


def fvcore_macs(model, inputs: tuple, ops: tuple[str, ...] | None = None) -> int:
    """fvcore's count (it reports MACs, calling them flops). Use an eager-attention model:
    fvcore silently skips scaled_dot_product_attention. ops=MATMUL_OPS keeps only the
    operators the analytic formula models (fvcore also counts LayerNorm, ~5 per element)."""
    import logging

    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    fca = FlopCountAnalysis(model, inputs)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    if ops is None:
        return int(fca.total())
    return int(sum(v for k, v in fca.by_operator().items() if k in ops))
