"""OPTIN pruned timm VisionTransformers: optin's wrapper of the timm model (carried beside this file
as timm_vit.py; needs timm), narrowed to config.optin_narrowed (heads, FFN neurons, kept tokens)
before the weights load (the remote twin of optin/adapters/timm_vit.py's narrowing)."""
from .optin_pruned import BiasOnly, Layout, OptinPruned, PassThrough
from .timm_vit import TimmVitForImageClassification


class TimmViTLayout(Layout):
    def layers(self):
        return list(self.model.vit.blocks)

    def attention(self, i):
        a = self.layers()[i].attn
        return a.qkv.q, a.qkv.k, a.qkv.v, a.proj, a.head_dim

    def set_num_heads(self, i, n):
        a = self.layers()[i].attn
        a.num_heads = n
        a.attn_dim = n * a.head_dim

    def empty_attention(self, i):
        b = self.layers()[i]
        b.attn = BiasOnly(b.attn.proj.bias, self.config.hidden_size)
        b.norm1 = PassThrough()

    def runs(self, i):
        mlp = self.layers()[i].mlp
        return [((mlp.fc1,), mlp.fc2)]

    def empty_runs(self, i, runs):
        b = self.layers()[i]
        b.mlp = BiasOnly(b.mlp.fc2.bias, self.config.hidden_size)
        b.norm2 = PassThrough()


class OptinTimmVitForImageClassification(OptinPruned, TimmVitForImageClassification):
    layout = TimmViTLayout
