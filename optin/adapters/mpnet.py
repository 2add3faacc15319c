"""MPNet sequence classifiers (Hugging Face transformers 5.x `MPNetForSequenceClassification`,
e.g. sentence-transformers/all-mpnet-base-v2 with a classification head).

Blocks are post-LayerNorm like BERT's, but attention lives in `layer.attention.attn` (q, k, v
and the output projection o together) and adds a relative-position bias. That bias is ONE table
shared by every layer, `encoder.relative_attention_bias` ([buckets, heads], a column per head):
the encoder computes it once per forward as a [batch, heads, n, n] tensor and hands the same
tensor to every layer, which adds it to its attention scores (transformers 5's
MPNetEncoder.compute_position_bias / MPNetSelfAttention.forward). So the table cannot be sliced
per layer. Narrowing keeps it whole (the state dict keeps its keys) and gives each narrowed layer
a constant index of its kept heads: a forward pre-hook on the layer's attention picks those
columns of the shared bias (an ONNX Gather), so layer i adds exactly the bias its kept heads
added in the dense model. The index is a non-persistent buffer that `load_pruned` re-creates by
narrowing from spec.json, as token reduction does.

Attention is always eager here (explicit matmuls, no SDPA), so fvcore counts it. Inputs:
input_ids and attention_mask (one token type, none fed); positions come from the padding id (1)
as in RoBERTa. The classifier reads <s>: dense + tanh + out_proj.
"""
from __future__ import annotations

import torch

from ..remote.modeling_optin_mpnet import MPNetBiasAttention, keep_bias_columns
from .base import Adapter, BiasOnly, Dims, LayerParts, PassThrough, Sublayer, inner
from .registry import register


@register
class MPNetAdapter(Adapter):
    model_types = ("mpnet",)

    @property
    def encoder_model(self):
        return self.model.mpnet

    def dims(self) -> Dims:
        c = self.config
        return Dims(c.num_hidden_layers, c.num_attention_heads, c.hidden_size // c.num_attention_heads,
                    c.hidden_size, c.intermediate_size)

    def layers(self):
        return list(self.encoder_model.encoder.layer)

    def parts(self, i):
        layer = self.layers()[i]
        a = layer.attention.attn
        return LayerParts(a.q, a.k, a.v, a.o, layer.intermediate.dense, layer.output.dense)

    # --- block-wise forward: the shared bias is computed once, in the context -------------------
    def embed(self, batch):
        m = self.encoder_model
        emb = m.embeddings(input_ids=batch["input_ids"])
        return emb, {"mask": self.additive_mask(batch["attention_mask"], emb.dtype),
                     "bias": m.encoder.compute_position_bias(emb)}

    def run_layer(self, i, hidden, ctx):
        return self.layers()[i](hidden, ctx["mask"], ctx["bias"])[0]

    def head(self, hidden, ctx):
        return self.model.classifier(hidden)

    # --- narrowing --------------------------------------------------------------------------------
    def set_num_heads(self, i, n):
        a = self.layers()[i].attention.attn
        a.num_attention_heads = n
        a.all_head_size = n * a.attention_head_size

    def keep_head_params(self, i, heads):
        a = self.layers()[i].attention.attn
        if "optin_bias_heads" in a._buffers:  # narrowed before: `heads` index the kept ones
            heads = a.optin_bias_heads[torch.as_tensor(heads)].tolist()
        keep_bias_columns(a, heads)

    def empty_attention(self, i):
        att = self.layers()[i].attention
        att.attn = MPNetBiasAttention(att.attn.o.bias, self.config.hidden_size)

    def empty_ffn(self, i):
        layer = self.layers()[i]
        layer.output.dense = BiasOnly(layer.output.dense.bias, self.config.hidden_size)
        layer.intermediate = PassThrough()

    def head_macs(self):
        d = self.config.hidden_size
        return d * d + d * self.config.num_labels  # dense + out_proj on <s>

    def sublayers(self, i, spec=None):
        # post-LN like BERT: LayerNorm(attn(x) + x) in the attention block, LayerNorm(ffn + ...) after
        layer = self.layers()[i]
        a = layer.attention.attn
        att = Sublayer(a, layer.attention.LayerNorm, reads="heads") if isinstance(a, BiasOnly) else Sublayer(
            a.o, layer.attention.LayerNorm, reads="heads", producers=inner(a.q, a.k, a.v))
        ffn = Sublayer(layer.output.dense, layer.output.LayerNorm,
                       producers=() if isinstance(layer.intermediate, PassThrough) else inner(layer.intermediate.dense))
        return [att, ffn]
