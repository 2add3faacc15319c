"""What the generic code needs to know of a transformer family, and nothing more.

An adapter hands out the Linear layers of each block (`parts`), runs the model one block at a
time (`embed`, `run_layer`, `head`) so that scoring can restart from a cached block input, and
does the family-specific steps of narrowing: updating head-count metadata (and per-head
parameters beyond q/k/v/o, such as Swin's relative-position bias) and replacing a block that
loses every head or neuron by a module that adds only the output bias. Where widths or token
counts differ across layers (Swin stages), `dims`, `layer_tokens`, `attention_keys` and
`valid_tokens(batch, layer)` say so per layer.

Layers without attention (CNN blocks, optin.adapters.conv) have 0 heads and no q/k/v/o; their
neurons are channels, made by several modules and possibly in several runs (`Channels`), and
they give their own MAC costs (`cost_model`, `spec_macs`) instead of the transformer formula.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# the stand-ins of emptied sublayers and the token gather live with the remote code that pruned
# folders carry, so that optin and those folders build the same modules (re-exported from here)
from ..remote.optin_pruned import BiasOnly, PassThrough, keep_tokens  # noqa: F401
from ..tasks import CLASSIFICATION


@dataclass(frozen=True)
class Channels:
    """A run of a layer's neurons: the modules that make them (`producers`: output rows of a
    Linear, output channels of a conv, a depthwise conv or a BatchNorm) and the one that reads
    them (`consumer`: input columns of a Linear, input channels of a conv); `width` dense units.
    Narrowing slices each module by its type (optin.channels), never by its family."""

    producers: tuple[nn.Module, ...]
    consumer: nn.Module
    width: int


@dataclass
class LayerParts:
    q: nn.Linear | None
    k: nn.Linear | None
    v: nn.Linear | None
    o: nn.Linear | None  # attention output projection: input columns are grouped by head; None: no attention
    ffn_in: nn.Module
    ffn_out: nn.Module   # input columns (channels) are FFN neurons
    # where the neurons are made by several modules or come in several runs (CNN blocks); empty:
    # one run, ffn_in → ffn_out
    runs: tuple[Channels, ...] = ()

    def neuron_runs(self, width: int) -> list[Channels]:
        """The runs of the layer's neurons in index order (width: the layer's dense neuron count)."""
        return list(self.runs) or [Channels((self.ffn_in,), self.ffn_out, width)]


@dataclass
class Sublayer:
    """Where the closed-form re-fit (optin.reconstruct) reads and writes one sublayer of a block.

    `consumer` reads the layer's kept units (a Linear over kept heads' columns or kept neurons,
    a conv over kept channels), or is the stand-in of a sublayer that kept none (BiasOnly,
    ConstantBranch: only a bias is left to fit). Its output z reaches the block's residual sum
    as scale·z + (something the re-fit does not change), and `total` is the module where that
    sum is seen: its first input ("input") or its output ("output"). Then the target for z is
    z + (dense sum − pruned sum) / scale, whatever the block does around it (post-LN BERT,
    pre-LN ViT, a CNN's BatchNorm and shortcut). `total=None` marks an inner consumer whose
    output is not added to a residual (a bottleneck's middle conv): its target is the dense
    consumer's output at the dense channels `keep_out`."""

    consumer: nn.Module
    total: nn.Module | None
    total_at: str = "input"
    reads: str = "neurons"                # which units the consumer reads: "heads" or "neurons"
    scale: torch.Tensor | None = None     # per output channel (LayerScale, an eval BatchNorm's a); None: 1
    bias_into: nn.Module | None = None    # a BatchNorm after a bias-free consumer takes the re-fit bias in β
    keep_out: torch.Tensor | None = None  # inner consumer: which dense output channels it computes
    # the consumer's input/output layout → [B, tokens, C] rows in the sum's token order
    # (Swin's windows); None: the same layout already
    rows: object = None
    # inner sublayers that make the units this consumer reads (q/k/v for heads, the first FFN
    # Linear for neurons, a CNN block's first conv): re-fit first, towards the dense outputs at
    # the kept units (their keep_out; None: derived from what the consumer reads and keeps)
    producers: tuple = ()


def inner(*modules, **kw) -> tuple[Sublayer, ...]:
    """Inner sublayers (no residual sum) for the given producer modules."""
    return tuple(Sublayer(m, None, reads="hidden", **kw) for m in modules)


@dataclass(frozen=True)
class Dims:
    """Dense widths. The scalars are every layer's in a uniform model (BERT, ViT) and the widest
    layer's where widths differ across layers (Swin stages); the `layer_*` tuples give each
    layer's own (filled from the scalars when not given). Masks and scores are [layers, max]
    tensors in which the units beyond a layer's own count are absent: never kept nor scored."""

    num_layers: int
    num_heads: int
    head_dim: int
    hidden: int
    ffn_size: int
    layer_heads: tuple[int, ...] | None = None
    layer_head_dim: tuple[int, ...] | None = None
    layer_hidden: tuple[int, ...] | None = None
    layer_ffn: tuple[int, ...] | None = None

    def __post_init__(self):
        for name, scalar in (("layer_heads", self.num_heads), ("layer_head_dim", self.head_dim),
                             ("layer_hidden", self.hidden), ("layer_ffn", self.ffn_size)):
            v = getattr(self, name)
            object.__setattr__(self, name, (scalar,) * self.num_layers if v is None else tuple(int(x) for x in v))

    @classmethod
    def per_layer(cls, heads, head_dim, hidden, ffn) -> "Dims":
        """Widths that differ across layers; the scalars become the maxima."""
        return cls(len(heads), max(heads), max(head_dim), max(hidden), max(ffn),
                   tuple(heads), tuple(head_dim), tuple(hidden), tuple(ffn))

    @property
    def uniform(self) -> bool:
        return all(len(set(getattr(self, n))) <= 1 for n in
                   ("layer_heads", "layer_head_dim", "layer_hidden", "layer_ffn"))

    def present(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[layers, num_heads] and [layers, ffn_size] bool: the units each layer really has."""
        heads = torch.arange(self.num_heads)[None, :] < torch.tensor(self.layer_heads)[:, None]
        neurons = torch.arange(self.ffn_size)[None, :] < torch.tensor(self.layer_ffn)[:, None]
        return heads, neurons


class Adapter:
    model_types: tuple[str, ...] = ()
    # the Hugging Face head this adapter prunes: its Auto class and its class-name suffix
    auto_class: str = "AutoModelForSequenceClassification"
    task_suffix: str = "ForSequenceClassification"
    modality: str = "text"  # what its examples are: "text" or "image" (optin.data / optin.images)
    # what its output means (optin.tasks): the KD term's class rows, the metric, the labels
    task = CLASSIFICATION
    requires: tuple[str, ...] = ()  # packages beyond the core install that the family needs (timm)
    # token reduction (optin.tokens) needs blocks that take [batch, tokens, hidden] first and no
    # per-token mask, and a head that reads only the leading `special_tokens` positions ([CLS])
    token_reduction: bool = False
    special_tokens: int = 0
    # False for families whose layers have no attention heads (CNNs): head-only steps (latency
    # tables of transformer blocks, Kwon et al.'s refinement) do not apply to them
    has_attention: bool = True
    # neurons kept in multiples of this unless --align says otherwise (optin.search)
    default_align: int = 1
    # how the search shares the budget across layers unless --allocation says otherwise (optin.search)
    default_allocation: str = "global"

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

    def valid_tokens(self, batch: dict, layer: int = 0) -> torch.Tensor:
        """[B, n] bool: the token rows of a batch that are real (not padding), in the hidden
        states entering block `layer` (layer = num_layers: the last block's output). The token
        count is the same at every layer unless the family changes it (Swin's patch merging)."""
        return batch["attention_mask"].bool()

    def seq_len(self, max_length: int) -> int:
        """Tokens per example that MACs are counted at: for text, the maximum length asked for."""
        return max_length

    def layer_tokens(self, max_length: int) -> list[int]:
        """Tokens each block runs on, per example (the MAC count's n per layer)."""
        return [self.seq_len(max_length)] * self.dims().num_layers

    def attention_keys(self) -> list[int | None]:
        """Keys each query attends to, per block: None for global attention over all n tokens;
        a window's token count for windowed attention (Swin)."""
        return [None] * self.dims().num_layers

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

    def keep_head_params(self, i: int, heads: list[int]) -> None:
        """Narrow per-head parameters other than q/k/v/o to the kept `heads` of block i (Swin's
        relative-position bias table has a column per head). Most families have none."""

    def empty_attention(self, i: int) -> None:
        raise NotImplementedError

    def empty_ffn(self, i: int) -> None:
        raise NotImplementedError

    def run_widths(self, i: int) -> list[int]:
        """Dense width of each run of layer i's neurons (transformers: one run, the FFN)."""
        return [self.dims().layer_ffn[i]]

    def empty_runs(self, i: int, runs: list[int]) -> None:
        """Runs `runs` of layer i's neurons keep nothing (the other runs are already sliced); a
        zero-width module would break export. One run (transformers): the FFN is emptied."""
        self.empty_ffn(i)

    def head_macs(self) -> int:
        """MACs outside the encoder blocks (pooler, classifier) per example."""
        raise NotImplementedError

    def sublayers(self, i: int, spec=None) -> list[Sublayer]:
        """Block i's sublayers in forward order, for the re-fit (optin.reconstruct); spec: the
        PruneSpec the model was narrowed to (None for the dense model), where an inner consumer
        needs to know which dense outputs it kept."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its sublayers for reconstruction")

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        """A block's output as [B, tokens, features], the rows of the trajectory Gram matrices
        (rows as valid_tokens(batch, layer + 1) counts them). Transformers: the hidden states."""
        return hidden

    def cost_model(self, seq_len: int, tokens=None):
        """Linear MAC cost per example (profiling.macs.CostModel) that the search spends the budget
        with: the transformer formula, each layer at its own width and token count (tokens: the
        tokens entering each block when some were dropped), windowed attention where it applies."""
        from profiling.macs import mac_cost_model

        d = self.dims()
        n = self.layer_tokens(seq_len) if tokens is None else list(tokens)
        return mac_cost_model(d.num_layers, d.layer_hidden, d.layer_head_dim, n, self.head_macs(),
                              self.attention_keys())

    def spec_macs(self, spec, seq_len: int) -> int:
        """MACs per example of the model narrowed to `spec` (exact where the cost model is not)."""
        tokens = spec.kept_tokens(self.seq_len(seq_len)) if spec.tokens is not None else None
        return int(round(self.cost_model(seq_len, tokens).total(spec.kept_heads, spec.kept_neurons)))

    def keep_tokens(self, i: int, idx: torch.Tensor) -> None:
        """Block i sees only rows `idx` of the tokens that reach it: a constant index_select
        (an ONNX Gather) in front of the block, so the shorter sequence is real compute saved.
        The index is a non-persistent buffer: the state dict keeps its keys and load_pruned
        re-applies it from spec.json."""
        keep_tokens(self.layers()[i], idx)

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
