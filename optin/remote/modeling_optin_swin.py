"""OPTIN pruned Swin image classifiers: the dense transformers class, narrowed to
config.optin_narrowed (heads and FFN neurons of every block of every stage) before the weights
load (the remote twin of optin/adapters/swin.py's narrowing)."""
from torch import nn
from transformers import SwinForImageClassification

from .optin_pruned import BiasAttention, BiasOnly, Layout, OptinPruned, PassThrough


class SwinLayout(Layout):
    def layers(self):
        return [block for stage in self.model.swin.encoder.layers for block in stage.blocks]

    def attention(self, i):
        a = self.layers()[i].attention
        return a.q_proj, a.k_proj, a.v_proj, a.o_proj, a.head_dim

    def set_num_heads(self, i, n):
        a = self.layers()[i].attention
        a.num_attention_heads = n
        if hasattr(a, "all_head_size"):
            a.all_head_size = n * a.head_dim
        # the relative-position bias table has a column per head
        bias = a.relative_position_bias
        t = bias.relative_position_bias_table
        bias.relative_position_bias_table = nn.Parameter(t.detach()[:, :n].clone(), requires_grad=t.requires_grad)

    def empty_attention(self, i):
        layer = self.layers()[i]
        o = layer.attention.o_proj
        layer.attention = BiasAttention(o.bias, o.out_features)
        layer.layernorm_before = PassThrough()

    def runs(self, i):
        mlp = self.layers()[i].mlp
        return [((mlp.fc1,), mlp.fc2)]

    def empty_runs(self, i, runs):
        layer = self.layers()[i]
        fc2 = layer.mlp.fc2
        layer.mlp = BiasOnly(fc2.bias, fc2.out_features)
        layer.layernorm_after = PassThrough()


class OptinSwinForImageClassification(OptinPruned, SwinForImageClassification):
    layout = SwinLayout
