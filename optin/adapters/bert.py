"""BERT, RoBERTa and DistilBERT sequence classifiers (Hugging Face transformers 5.x)."""
from __future__ import annotations

import torch

from .base import Adapter, BiasOnly, Dims, LayerParts, PassThrough, Sublayer, inner
from .registry import register


@register
class BertAdapter(Adapter):
    model_types = ("bert",)
    base = "bert"

    @property
    def encoder_model(self):
        return getattr(self.model, self.base)

    def dims(self) -> Dims:
        c = self.config
        return Dims(c.num_hidden_layers, c.num_attention_heads, c.hidden_size // c.num_attention_heads,
                    c.hidden_size, c.intermediate_size)

    def layers(self):
        return list(self.encoder_model.encoder.layer)

    def parts(self, i):
        layer = self.layers()[i]
        s = layer.attention.self
        return LayerParts(s.query, s.key, s.value, layer.attention.output.dense,
                          layer.intermediate.dense, layer.output.dense)

    def embed(self, batch):
        emb = self.encoder_model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
        return emb, {"mask": self.additive_mask(batch["attention_mask"], emb.dtype)}

    def run_layer(self, i, hidden, ctx):
        return self.layers()[i](hidden, ctx["mask"])

    def head(self, hidden, ctx):
        return self.model.classifier(self.model.dropout(self.encoder_model.pooler(hidden)))

    def set_num_heads(self, i, n):
        s = self.layers()[i].attention.self
        s.num_attention_heads = n
        s.all_head_size = n * s.attention_head_size

    def empty_attention(self, i):
        att = self.layers()[i].attention
        att.output.dense = BiasOnly(att.output.dense.bias, self.config.hidden_size)
        att.self = PassThrough(returns_tuple=True)

    def empty_ffn(self, i):
        layer = self.layers()[i]
        layer.output.dense = BiasOnly(layer.output.dense.bias, self.config.hidden_size)
        layer.intermediate = PassThrough()

    def head_macs(self):
        d = self.config.hidden_size
        return d * d + d * self.config.num_labels  # pooler on [CLS] + classifier

    def sublayers(self, i, spec=None):
        # post-LN: each sublayer's output is added to its input inside the LayerNorm's argument
        layer = self.layers()[i]
        s = layer.attention.self
        qkv = () if isinstance(s, PassThrough) else inner(s.query, s.key, s.value)
        fc1 = () if isinstance(layer.intermediate, PassThrough) else inner(layer.intermediate.dense)
        return [Sublayer(layer.attention.output.dense, layer.attention.output.LayerNorm, reads="heads", producers=qkv),
                Sublayer(layer.output.dense, layer.output.LayerNorm, producers=fc1)]


@register
class RobertaAdapter(BertAdapter):
    model_types = ("roberta", "xlm-roberta", "camembert")
    base = "roberta"

    def embed(self, batch):
        # RoBERTa has one token type and derives positions from padding; let its embeddings do it.
        emb = self.encoder_model.embeddings(input_ids=batch["input_ids"])
        return emb, {"mask": self.additive_mask(batch["attention_mask"], emb.dtype)}

    def head(self, hidden, ctx):
        return self.model.classifier(hidden)

    def head_macs(self):
        d = self.config.hidden_size
        return d * d + d * self.config.num_labels  # dense + out_proj on <s>


@register
class DistilBertAdapter(Adapter):
    model_types = ("distilbert",)

    def dims(self):
        c = self.config
        return Dims(c.n_layers, c.n_heads, c.dim // c.n_heads, c.dim, c.hidden_dim)

    def layers(self):
        return list(self.model.distilbert.transformer.layer)

    def parts(self, i):
        layer = self.layers()[i]
        a = layer.attention
        return LayerParts(a.q_lin, a.k_lin, a.v_lin, a.out_lin, layer.ffn.lin1, layer.ffn.lin2)

    def embed(self, batch):
        emb = self.model.distilbert.embeddings(batch["input_ids"])
        return emb, {"mask": self.additive_mask(batch["attention_mask"], emb.dtype)}

    def run_layer(self, i, hidden, ctx):
        return self.layers()[i](hidden, ctx["mask"])

    def head(self, hidden, ctx):
        m = self.model
        x = torch.relu(m.pre_classifier(hidden[:, 0]))
        return m.classifier(m.dropout(x))

    def set_num_heads(self, i, n):
        a = self.layers()[i].attention
        a.n_heads = n

    def empty_attention(self, i):
        layer = self.layers()[i]
        layer.attention = _BiasAttention(layer.attention.out_lin.bias, self.config.dim)

    def empty_ffn(self, i):
        layer = self.layers()[i]
        layer.ffn = BiasOnly(layer.ffn.lin2.bias, self.config.dim)

    def head_macs(self):
        d = self.config.dim
        return d * d + d * self.config.num_labels

    def sublayers(self, i, spec=None):
        layer = self.layers()[i]
        a, f = layer.attention, layer.ffn
        att = Sublayer(a, layer.sa_layer_norm, reads="heads") if isinstance(a, BiasOnly) else Sublayer(
            a.out_lin, layer.sa_layer_norm, reads="heads", producers=inner(a.q_lin, a.k_lin, a.v_lin))
        ffn = Sublayer(f, layer.output_layer_norm) if isinstance(f, BiasOnly) else Sublayer(
            f.lin2, layer.output_layer_norm, producers=inner(f.lin1))
        return [att, ffn]


class _BiasAttention(BiasOnly):
    """DistilBERT's attention returns (output, weights) and takes the output projection inside."""

    def forward(self, x, *args, **kwargs):
        return super().forward(x), None
