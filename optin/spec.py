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

    @property
    def kept_heads(self) -> list[int]:
        return [len(h) for h in self.heads]

    @property
    def kept_neurons(self) -> list[int]:
        return [len(n) for n in self.neurons]

    @classmethod
    def dense(cls, model_type: str, num_layers: int, num_heads: int, ffn_size: int) -> "PruneSpec":
        return cls(model_type, num_heads, ffn_size,
                   tuple(tuple(range(num_heads)) for _ in range(num_layers)),
                   tuple(tuple(range(ffn_size)) for _ in range(num_layers)))

    @classmethod
    def from_masks(cls, model_type: str, head_mask, neuron_mask) -> "PruneSpec":
        """Masks are [layers, units] 0/1 tensors."""
        return cls(model_type, int(head_mask.shape[1]), int(neuron_mask.shape[1]),
                   tuple(tuple(int(j) for j in row.nonzero().flatten()) for row in head_mask),
                   tuple(tuple(int(j) for j in row.nonzero().flatten()) for row in neuron_mask))

    def masks(self):
        import torch

        hm = torch.zeros(len(self.heads), self.num_heads)
        nm = torch.zeros(len(self.neurons), self.ffn_size)
        for i, (h, n) in enumerate(zip(self.heads, self.neurons)):
            hm[i, list(h)] = 1.0
            nm[i, list(n)] = 1.0
        return hm, nm

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "PruneSpec":
        d = json.loads(text)
        d["heads"] = tuple(tuple(h) for h in d["heads"])
        d["neurons"] = tuple(tuple(n) for n in d["neurons"])
        return cls(**d)
