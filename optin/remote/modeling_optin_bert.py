"""OPTIN pruned BERT, RoBERTa (XLM-R, CamemBERT) and DistilBERT sequence classifiers: the dense
transformers class, narrowed to config.optin_narrowed before the weights load (the remote twin of
optin/adapters/bert.py's narrowing)."""
from transformers import (BertForSequenceClassification, CamembertForSequenceClassification,
                          DistilBertForSequenceClassification, RobertaForSequenceClassification,
                          XLMRobertaForSequenceClassification)

from .optin_pruned import BiasAttention, BiasOnly, Layout, OptinPruned, PassThrough


class BertLayout(Layout):
    def layers(self):
        return list(getattr(self.model, self.model.base_model_prefix).encoder.layer)

    def attention(self, i):
        layer = self.layers()[i]
        s = layer.attention.self
        return s.query, s.key, s.value, layer.attention.output.dense, s.attention_head_size

    def set_num_heads(self, i, n):
        s = self.layers()[i].attention.self
        s.num_attention_heads = n
        s.all_head_size = n * s.attention_head_size

    def empty_attention(self, i):
        att = self.layers()[i].attention
        att.output.dense = BiasOnly(att.output.dense.bias, self.config.hidden_size)
        att.self = PassThrough(returns_tuple=True)

    def runs(self, i):
        layer = self.layers()[i]
        return [((layer.intermediate.dense,), layer.output.dense)]

    def empty_runs(self, i, runs):
        layer = self.layers()[i]
        layer.output.dense = BiasOnly(layer.output.dense.bias, self.config.hidden_size)
        layer.intermediate = PassThrough()


class DistilBertLayout(Layout):
    def layers(self):
        return list(self.model.distilbert.transformer.layer)

    def attention(self, i):
        a = self.layers()[i].attention
        return a.q_lin, a.k_lin, a.v_lin, a.out_lin, self.config.dim // self.config.n_heads

    def set_num_heads(self, i, n):
        self.layers()[i].attention.n_heads = n

    def empty_attention(self, i):
        layer = self.layers()[i]
        layer.attention = BiasAttention(layer.attention.out_lin.bias, self.config.dim)

    def runs(self, i):
        ffn = self.layers()[i].ffn
        return [((ffn.lin1,), ffn.lin2)]

    def empty_runs(self, i, runs):
        layer = self.layers()[i]
        layer.ffn = BiasOnly(layer.ffn.lin2.bias, self.config.dim)


class OptinBertForSequenceClassification(OptinPruned, BertForSequenceClassification):
    layout = BertLayout


class OptinRobertaForSequenceClassification(OptinPruned, RobertaForSequenceClassification):
    layout = BertLayout


class OptinXLMRobertaForSequenceClassification(OptinPruned, XLMRobertaForSequenceClassification):
    layout = BertLayout


class OptinCamembertForSequenceClassification(OptinPruned, CamembertForSequenceClassification):
    layout = BertLayout


class OptinDistilBertForSequenceClassification(OptinPruned, DistilBertForSequenceClassification):
    layout = DistilBertLayout
