"""Analytic MAC counts of a (pruned) transformer encoder, and an fvcore cross-check.

Per layer, at sequence length n (tokens; for a ViT, patches + [CLS]), hidden size d, head size d_h (Kwon et al. 2022, eq. in §4.1):
    heads · (4·n·d·d_h + 2·n²·d_h)  +  neurons · (2·n·d)
q, k, v and output projections give 4·n·d·d_h per head; Q·Kᵀ and A·V give 2·n²·d_h. Where each
query attends to a window of k keys instead of all n tokens (Swin), Q·Kᵀ and A·V give 2·n·k·d_h.
Each layer is counted at its own n, d, d_h (and k): they differ across Swin stages.
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


def _per_layer(v, num_layers: int) -> list:
    return [v] * num_layers if v is None or isinstance(v, int) else list(v)


def mac_cost_model(num_layers: int, hidden, head_dim, seq_len, fixed: int, keys=None) -> CostModel:
    """seq_len: tokens per layer, one int for all layers or one per layer (token reduction, Swin
    stages); hidden and head_dim likewise. keys: keys each query attends to, per layer or one for
    all; None (or a None entry) is global attention over the layer's n tokens."""
    tokens = _per_layer(seq_len, num_layers)
    per_head = tuple(4 * n * d * dh + 2 * n * (n if k is None else k) * dh for n, d, dh, k in
                     zip(tokens, _per_layer(hidden, num_layers), _per_layer(head_dim, num_layers),
                         _per_layer(keys, num_layers)))
    per_neuron = tuple(2 * n * d for n, d in zip(tokens, _per_layer(hidden, num_layers)))
    return CostModel(per_head, per_neuron, fixed, max(tokens))


def dense_macs(adapter, seq_len: int) -> int:
    """Exact MACs per example of the dense model: the family's `spec_macs` of a spec that keeps
    every unit each layer has (exact where the search's linear cost model is not, e.g. CNN blocks).
    Lives here, below the pruner, so that profiling never imports a pruning step."""
    from optin.spec import PruneSpec

    d = adapter.dims()
    full = PruneSpec.from_masks(adapter.config.model_type, *[m.float() for m in d.present()], dims=d)
    return adapter.spec_macs(full, seq_len)


MATMUL_OPS = ("linear", "matmul", "bmm", "einsum", "addmm", "conv")  # conv: a ViT patch embedding


def fvcore_macs(model, inputs: tuple, ops: tuple[str, ...] | None = None, both: bool = False):
    """fvcore's count (it reports MACs, calling them flops). Use an eager-attention model:
    fvcore silently skips scaled_dot_product_attention. ops=MATMUL_OPS keeps only the
    operators the analytic formula models (fvcore also counts LayerNorm, ~5 per element, and
    BatchNorm). both=True: (total, count of `ops` or MATMUL_OPS) from one trace."""
    import logging

    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    fca = FlopCountAnalysis(model, inputs)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    selected = int(sum(v for k, v in fca.by_operator().items() if k in (ops or MATMUL_OPS)))
    if both:
        return int(fca.total()), selected
    return int(fca.total()) if ops is None else selected
