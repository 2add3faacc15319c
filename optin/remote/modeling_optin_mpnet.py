"""OPTIN pruned MPNet sequence classifiers: the dense transformers class, narrowed to
config.optin_narrowed before the weights load (the remote twin of optin/adapters/mpnet.py's
narrowing). MPNet adds one relative-position bias table shared by every layer, a column per head:
each narrowed layer keeps the columns of the heads it kept (config.optin_narrowed["head_index"]),
through a pre-hook on its self-attention that optin's adapter installs too (this file is the one
source of both)."""
import torch
from transformers import MPNetForSequenceClassification

from .optin_pruned import BiasOnly, Layout, OptinPruned, PassThrough


class MPNetBiasAttention(BiasOnly):
    """Stands in for an emptied self-attention: MPNet's attention block reads its output as a tuple."""

    def forward(self, x, *args, **kwargs):
        return (super().forward(x),)


def kept_bias_columns(module, args, kwargs):
    """Forward pre-hook of a narrowed layer's self-attention: the shared [B, heads, n, n] bias
    (third positional argument, or `position_bias`) restricted to the heads the layer kept."""
    idx = module.optin_bias_heads
    if "position_bias" in kwargs:
        if kwargs["position_bias"] is not None:
            kwargs = {**kwargs, "position_bias": kwargs["position_bias"].index_select(1, idx)}
        return args, kwargs
    if len(args) > 2 and args[2] is not None:
        args = args[:2] + (args[2].index_select(1, idx),) + tuple(args[3:])
    return args, kwargs


def keep_bias_columns(attn, heads) -> None:
    """Layer `attn` adds the bias columns of dense heads `heads` (a non-persistent index)."""
    fresh = "optin_bias_heads" not in attn._buffers
    attn.register_buffer("optin_bias_heads", torch.as_tensor(heads, dtype=torch.long,
                                                             device=attn.q.weight.device), persistent=False)
    if fresh:
        attn.register_forward_pre_hook(kept_bias_columns, with_kwargs=True)


class MPNetLayout(Layout):
    def layers(self):
        return list(self.model.mpnet.encoder.layer)

    def attention(self, i):
        a = self.layers()[i].attention.attn
        return a.q, a.k, a.v, a.o, a.attention_head_size

    def set_num_heads(self, i, n):
        a = self.layers()[i].attention.attn
        a.num_attention_heads = n
        a.all_head_size = n * a.attention_head_size
        keep_bias_columns(a, self.plan["head_index"][i])

    def buffers(self):
        super().buffers()
        for i, layer in enumerate(self.layers()):
            a = layer.attention.attn
            if not isinstance(a, BiasOnly) and "optin_bias_heads" in a._buffers:
                keep_bias_columns(a, self.plan["head_index"][i])

    def empty_attention(self, i):
        att = self.layers()[i].attention
        att.attn = MPNetBiasAttention(att.attn.o.bias, self.config.hidden_size)

    def runs(self, i):
        layer = self.layers()[i]
        return [((layer.intermediate.dense,), layer.output.dense)]

    def empty_runs(self, i, runs):
        layer = self.layers()[i]
        layer.output.dense = BiasOnly(layer.output.dense.bias, self.config.hidden_size)
        layer.intermediate = PassThrough()


class OptinMPNetForSequenceClassification(OptinPruned, MPNetForSequenceClassification):
    layout = MPNetLayout
