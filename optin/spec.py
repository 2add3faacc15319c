"""The pruning spec: which heads and FFN neurons each layer keeps. Saved as spec.json beside
every artifact; every later stage reads it and none re-derives it."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PruneSpec:
    model_type: str
    num_heads: int            # heads per layer in the dense model
    ffn_size: int             # FFN neurons per layer in the dense model
    heads: tuple[tuple[int, ...], ...]    # kept head indices, per layer
    neurons: tuple[tuple[int, ...], ...]  # kept neuron indices, per layer
    # token positions (of the dense sequence) entering each layer; None: every token everywhere.
    # Nested and non-increasing with depth: a token dropped before layer i stays dropped.
    tokens: tuple[tuple[int, ...], ...] | None = None
    # dense heads and neurons of each layer where widths differ across layers (Swin stages);
    # num_heads and ffn_size are then the widest layer's. None: every layer has num_heads/ffn_size.
    layer_heads: tuple[int, ...] | None = None
    layer_ffn: tuple[int, ...] | None = None

    @property
    def kept_heads(self) -> list[int]:
        return [len(h) for h in self.heads]

    @property
    def kept_neurons(self) -> list[int]:
        return [len(n) for n in self.neurons]

    def dense_widths(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Dense (heads, neurons) of each layer."""
        L = len(self.heads)
        return (self.layer_heads or (self.num_heads,) * L, self.layer_ffn or (self.ffn_size,) * L)

    def kept_tokens(self, dense_tokens: int) -> list[int]:
        """Tokens entering each layer (dense_tokens everywhere without token reduction)."""
        return [dense_tokens] * len(self.heads) if self.tokens is None else [len(t) for t in self.tokens]

    @classmethod
    def dense(cls, model_type: str, num_layers: int, num_heads: int, ffn_size: int) -> "PruneSpec":
        return cls(model_type, num_heads, ffn_size,
                   tuple(tuple(range(num_heads)) for _ in range(num_layers)),
                   tuple(tuple(range(ffn_size)) for _ in range(num_layers)))

    @classmethod
    def from_masks(cls, model_type: str, head_mask, neuron_mask, tokens=None, dims=None) -> "PruneSpec":
        """Masks are [layers, units] 0/1 tensors; tokens as in the field (optin.tokens). dims: the
        model's Dims (optin.adapters.base), needed where widths differ across layers."""
        per_layer = dims is not None and not dims.uniform
        return cls(model_type, int(head_mask.shape[1]), int(neuron_mask.shape[1]),
                   tuple(tuple(int(j) for j in row.nonzero().flatten()) for row in head_mask),
                   tuple(tuple(int(j) for j in row.nonzero().flatten()) for row in neuron_mask),
                   None if tokens is None else tuple(tuple(int(p) for p in t) for t in tokens),
                   dims.layer_heads if per_layer else None, dims.layer_ffn if per_layer else None)

    def masks(self):
        import torch

        hm = torch.zeros(len(self.heads), self.num_heads)
        nm = torch.zeros(len(self.neurons), self.ffn_size)
        for i, (h, n) in enumerate(zip(self.heads, self.neurons)):
            hm[i, list(h)] = 1.0
            nm[i, list(n)] = 1.0
        return hm, nm

    def to_json(self) -> str:
        d = asdict(self)
        for k in ("layer_heads", "layer_ffn"):  # uniform widths: the format of older spec.json files
            if d[k] is None:
                del d[k]
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "PruneSpec":
        d = json.loads(text)
        d["heads"] = tuple(tuple(h) for h in d["heads"])
        d["neurons"] = tuple(tuple(n) for n in d["neurons"])
        if d.get("tokens") is not None:  # absent in spec.json files written before token reduction
            d["tokens"] = tuple(tuple(t) for t in d["tokens"])
        for k in ("layer_heads", "layer_ffn"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)
