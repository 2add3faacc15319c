"""The generic half of a pruned folder's remote code: the stand-ins OPTIN puts where a sublayer kept
nothing, the token gather of ViT token reduction, and the narrowing of a freshly built dense
skeleton to the widths saved in config.json, so that the narrowed weights then load strictly.

This file is copied into every pruned folder and runs where optin is not installed: it imports
torch alone. optin's adapters import the stand-ins and the token gather from here as well
(optin.adapters.base, optin.adapters.conv), so both sides build the very same modules.

`config.optin_narrowed` (written by optin.remote_code from the spec):
  heads         per layer, the heads kept (0: attention emptied; 0 too where a layer has none, CNNs)
  runs          per layer, the units kept in each run of its neurons, in order: one run for a
                transformer FFN, a CNN block's inner channels (two runs in a ResNet bottleneck);
                0: that run emptied
  tokens        per layer, the dense token positions entering it; null without token reduction
  dense_tokens  tokens entering the first block of the dense model (with `tokens`)
The skeleton keeps the first units of each module: its weights are placeholders that loading replaces.

A family's part (modeling_optin_<family>.py) gives a `Layout` (where its modules are, and how a
sublayer is emptied, as its optin adapter does) and one class per transformers class:
`class OptinBertForSequenceClassification(OptinPruned, BertForSequenceClassification)` with
`layout = BertLayout`.
"""
from __future__ import annotations

import torch
from torch import nn


# --- stand-ins (optin.narrow puts them where a sublayer keeps nothing) ---------------------------
class BiasOnly(nn.Module):
    """Stands in for a projection whose inputs were all pruned: the output is its bias alone.
    A zero-width Linear would break ONNX export and ONNX Runtime (Reshape of a 0-sized tensor)."""

    def __init__(self, bias: torch.Tensor | None, width: int):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone() if bias is not None else torch.zeros(width))

    def forward(self, x, *args, **kwargs):
        return self.bias.expand(*x.shape[:-1], self.bias.shape[0])


class BiasAttention(BiasOnly):
    """BiasOnly for an attention module whose caller unpacks (output, weights)."""

    def forward(self, x, *args, **kwargs):
        return super().forward(x), None


class PassThrough(nn.Module):
    """Stands in for a sub-module whose result is no longer used (its consumer is BiasOnly)."""

    def __init__(self, returns_tuple: bool = False):
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, x, *args, **kwargs):
        return (x, None) if self.returns_tuple else x


class ConstantBranch(nn.Module):
    """Stands in for a block branch whose inner channels were all pruned: its output no longer
    depends on the input, it is a per-channel constant (what the BatchNorm after the emptied conv
    makes of zeros) on the branch's output grid. The grid comes from a strided slice of the
    input, so no shape arithmetic reaches the ONNX graph, and no zero-width conv is left."""

    def __init__(self, value: torch.Tensor, stride: int):
        super().__init__()
        self.bias = nn.Parameter(value.detach().reshape(-1).clone())
        self.stride = int(stride)

    def forward(self, x):
        s = self.stride
        return x[:, :1, ::s, ::s] * 0 + self.bias.view(1, -1, 1, 1)


# --- token reduction ---------------------------------------------------------------------------
def _select_tokens(module, args):
    """Forward pre-hook of a block that sees only some of the tokens (keep_tokens)."""
    return (args[0].index_select(1, module.optin_keep_tokens),) + tuple(args[1:])


def keep_tokens(layer: nn.Module, idx: torch.Tensor) -> None:
    """`layer` sees only rows `idx` of the tokens that reach it: a constant index_select (an ONNX
    Gather) in front of it. The index is a non-persistent buffer, so the state dict keeps its keys;
    calling again only replaces the index."""
    fresh = "optin_keep_tokens" not in layer._buffers
    layer.register_buffer("optin_keep_tokens", idx.to(torch.long), persistent=False)
    if fresh:
        layer.register_forward_pre_hook(_select_tokens)


# --- narrowing a dense skeleton to saved widths --------------------------------------------------
def _keep_first(m: nn.Module, n: int, side: str) -> None:
    """Keep the first n output units (side "out") or input units ("in") of a Linear, a Conv2d
    (a depthwise one loses inputs and groups with its outputs) or a BatchNorm2d."""
    def cut(t, dim):
        return nn.Parameter(t.detach().narrow(dim, 0, n).clone(), requires_grad=t.requires_grad)

    dim = 0 if side == "out" else 1
    if isinstance(m, nn.BatchNorm2d):
        if m.affine:
            m.weight, m.bias = cut(m.weight, 0), cut(m.bias, 0)
        if m.track_running_stats:
            m.running_mean, m.running_var = m.running_mean[:n].clone(), m.running_var[:n].clone()
        m.num_features = n
        return
    m.weight = cut(m.weight, dim)
    if side == "out" and m.bias is not None:
        m.bias = cut(m.bias, 0)
    if isinstance(m, nn.Linear):
        setattr(m, "out_features" if side == "out" else "in_features", n)
    elif isinstance(m, nn.Conv2d):
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        if side == "out":
            m.out_channels = n
            if depthwise:
                m.in_channels = m.groups = n
        else:
            m.in_channels = n
    else:
        raise TypeError(f"cannot narrow a {type(m).__name__}")


class Layout:
    """Where a family's prunable modules are; one subclass per family (modeling_optin_<family>.py),
    the remote twin of the narrowing half of its optin adapter."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        self.plan = getattr(model.config, "optin_narrowed", None) or {}

    def buffers(self) -> None:
        """Non-persistent buffers again, after from_pretrained (which leaves them uninitialised):
        the token gathers; a family with its own adds them."""
        apply_tokens(self, self.plan)

    def layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def attention(self, i: int):
        """(q, k, v, o, head size) of layer i: q/k/v outputs and o's inputs grouped by head; None: no attention."""
        return None

    def set_num_heads(self, i: int, n: int) -> None:
        """Head-count metadata of layer i, and per-head parameters beyond q/k/v/o (Swin's bias table)."""
        raise NotImplementedError

    def empty_attention(self, i: int) -> None:
        raise NotImplementedError

    def runs(self, i: int) -> list[tuple[tuple[nn.Module, ...], nn.Module]]:
        """The runs of layer i's neurons in index order: (producers sliced on outputs, consumer on inputs)."""
        raise NotImplementedError

    def empty_runs(self, i: int, runs: list[int]) -> None:
        """Runs `runs` of layer i keep nothing (the others are already sliced): put the stand-ins."""
        raise NotImplementedError


def narrow_skeleton(layout: Layout, plan: dict) -> None:
    """Narrow the dense skeleton in place to `plan` (config.optin_narrowed), the way optin.narrow
    narrowed the model that was saved."""
    layers = layout.layers()
    if len(plan["heads"]) != len(layers) or len(plan["runs"]) != len(layers):
        raise ValueError(f"optin_narrowed describes {len(plan['heads'])} layers, the model has {len(layers)}")
    for i, (heads, runs) in enumerate(zip(plan["heads"], plan["runs"])):
        att = layout.attention(i)
        if att is not None:
            q, k, v, o, head_dim = att
            if heads == 0:
                layout.empty_attention(i)
            elif heads * head_dim < q.out_features:
                for lin in (q, k, v):
                    _keep_first(lin, heads * head_dim, "out")
                _keep_first(o, heads * head_dim, "in")
                layout.set_num_heads(i, heads)
        dense = layout.runs(i)
        if len(runs) != len(dense):
            raise ValueError(f"optin_narrowed gives layer {i} {len(runs)} runs of neurons, the model has {len(dense)}")
        for (producers, consumer), n in zip(dense, runs):
            if n > 0:
                for m in producers:
                    _keep_first(m, n, "out")
                _keep_first(consumer, n, "in")
        emptied = [r for r, n in enumerate(runs) if n == 0]
        if emptied:
            layout.empty_runs(i, emptied)
    apply_tokens(layout, plan)


def apply_tokens(layout: Layout, plan: dict) -> None:
    """Give each block the rows of its token set within the previous block's set."""
    if plan.get("tokens") is None:
        return
    device = next(layout.model.parameters()).device
    prev = list(range(plan["dense_tokens"]))
    for layer, keep in zip(layout.layers(), plan["tokens"]):
        if len(keep) < len(prev):
            where = {p: r for r, p in enumerate(prev)}
            keep_tokens(layer, torch.tensor([where[p] for p in keep], device=device))
        prev = list(keep)


class OptinPruned:
    """First base of a family's pruned class: the next base builds the dense skeleton, which is then
    narrowed to config.optin_narrowed before from_pretrained loads the narrowed weights into it."""

    layout: type[Layout] = Layout

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        narrow_skeleton(self.layout(self), config.optin_narrowed)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        out = super().from_pretrained(*args, **kwargs)
        # transformers builds the skeleton on the meta device and leaves non-persistent buffers
        # (the token indices) uninitialised: set them again on the loaded model
        model = out[0] if isinstance(out, tuple) else out
        cls.layout(model).buffers()
        return out
