"""What the generic code needs to know of a transformer family, and nothing more.

An adapter hands out the Linear layers of each block (`parts`), runs the model one block at a
time (`embed`, `run_layer`, `head`) so that scoring can restart from a cached block input, and
does the two family-specific steps of narrowing: updating head-count metadata and replacing a
block that loses every head or neuron by a module that adds only the output bias.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerParts:
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear        # attention output projection: input columns are grouped by head
    ffn_in: nn.Linear
    ffn_out: nn.Linear  # input columns are FFN neurons


@dataclass(frozen=True)
class Dims:
    num_layers: int
    num_heads: int
    head_dim: int
    hidden: int
    ffn_size: int


class BiasOnly(nn.Module):
    """Stands in for a projection whose inputs were all pruned: the output is its bias alone.
    A zero-width Linear would break ONNX export and ONNX Runtime (Reshape of a 0-sized tensor)."""

    def __init__(self, bias: torch.Tensor | None, width: int):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone() if bias is not None else torch.zeros(width))

    def forward(self, x, *args, **kwargs):
        return self.bias.expand(*x.shape[:-1], self.bias.shape[0])


class PassThrough(nn.Module):
    """Stands in for a sub-module whose result is no longer used (its consumer is BiasOnly)."""

    def __init__(self, returns_tuple: bool = False):
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, x, *args, **kwargs):
        return (x, None) if self.returns_tuple else x


class Adapter:
    model_types: tuple[str, ...] = ()
    # the Hugging Face head this adapter prunes: its Auto class and its class-name suffix
    auto_class: str = "AutoModelForSequenceClassification"
    task_suffix: str = "ForSequenceClassification"
    modality: str = "text"  # what its examples are: "text" or "image" (optin.data / optin.images)

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    # --- inputs: text by default; other modalities override -------------------------------
    @classmethod
    def load_processor(cls, path: str, config):
        """What turns examples into model inputs (optin.data.make_batches): the tokenizer."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)

    @classmethod
    def auto_model(cls):
        """The transformers class that builds this family's classifier (from_pretrained, from_config)."""
        import transformers

        return getattr(transformers, cls.auto_class)

    @classmethod
    def from_config(cls, config) -> nn.Module:
        """A randomly initialised classifier of this family (the skeleton load_pruned narrows)."""
        return cls.auto_model().from_config(config)

    def input_names(self) -> list[str]:
        """ONNX inputs: token_type_ids only where the model has more than one token type (BERT);
        RoBERTa has one type and DistilBERT none, so feeding it would only add a dead input."""
        names = ["input_ids", "attention_mask"]
        if getattr(self.config, "type_vocab_size", 0) > 1:
            names.append("token_type_ids")
        return names

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {n: {0: "batch", 1: "sequence"} for n in self.input_names()}

    def random_inputs(self, batch: int, seq: int, g: torch.Generator, ragged: bool = False) -> dict:
        """Random model inputs (export tracing, fvcore, fallbacks when no real data is at hand)."""
        ids = torch.randint(5, max(6, self.config.vocab_size), (batch, seq), generator=g)
        mask = torch.ones(batch, seq, dtype=torch.long)
        if ragged:
            for j in range(batch):
                mask[j, int(torch.randint(2, seq + 1, (1,), generator=g)):] = 0
        out = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names():
            out["token_type_ids"] = torch.zeros_like(ids)
        return out

    def valid_tokens(self, batch: dict) -> torch.Tensor:
        """[B, n] bool: the token rows of a batch that are real (not padding)."""
        return batch["attention_mask"].bool()

    def seq_len(self, max_length: int) -> int:
        """Tokens per example that MACs are counted at: for text, the maximum length asked for."""
        return max_length

    # --- family knowledge, implemented by subclasses -------------------------------------
    def dims(self) -> Dims:
        raise NotImplementedError

    def layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def parts(self, i: int) -> LayerParts:
        raise NotImplementedError

    def embed(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Embeddings of a batch, and the context (attention mask) that every block needs."""
        raise NotImplementedError

    def run_layer(self, i: int, hidden: torch.Tensor, ctx: dict) -> torch.Tensor:
        raise NotImplementedError

    def head(self, hidden: torch.Tensor, ctx: dict) -> torch.Tensor:
        raise NotImplementedError

    def set_num_heads(self, i: int, n: int) -> None:
        raise NotImplementedError

    def empty_attention(self, i: int) -> None:
        raise NotImplementedError

    def empty_ffn(self, i: int) -> None:
        raise NotImplementedError

    def head_macs(self) -> int:
        """MACs outside the encoder blocks (pooler, classifier) per example."""
        raise NotImplementedError

    # --- shared plumbing --------------------------------------------------------------------
    def forward(self, batch: dict) -> torch.Tensor:
        hidden, ctx = self.embed(batch)
        for i in range(len(self.layers())):
            hidden = self.run_layer(i, hidden, ctx)
        return self.head(hidden, ctx)

    @staticmethod
    def repeat_batch(ctx: dict, k: int) -> dict:
        """The context for k stacked copies of a batch (context tensors are batch-first)."""
        return {n: v.repeat(k, *[1] * (v.dim() - 1)) if torch.is_tensor(v) else v for n, v in ctx.items()}

    @staticmethod
    def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B, n] 0/1 → [B, 1, 1, n] additive mask, accepted by eager and SDPA attention."""
        m = attention_mask[:, None, None, :].to(dtype)
        return (1.0 - m) * torch.finfo(dtype).min
