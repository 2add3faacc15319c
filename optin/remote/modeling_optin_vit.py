"""OPTIN pruned ViT and DeiT image classifiers: the dense transformers class, narrowed to
config.optin_narrowed (heads, FFN neurons, kept tokens) before the weights load (the remote twin
of optin/adapters/vit.py's narrowing)."""
from transformers import DeiTForImageClassification, ViTForImageClassification

from .optin_pruned import BiasAttention, BiasOnly, Layout, OptinPruned, PassThrough


class ViTLayout(Layout):
    def layers(self):
        return list(getattr(self.model, self.model.base_model_prefix).layers)

    def attention(self, i):
        a, c = self.layers()[i].attention, self.config
        return a.q_proj, a.k_proj, a.v_proj, a.o_proj, getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads

    def set_num_heads(self, i, n):
        self.layers()[i].attention.num_attention_heads = n

    def empty_attention(self, i):
        layer = self.layers()[i]
        layer.attention = BiasAttention(layer.attention.o_proj.bias, self.config.hidden_size)
        layer.layernorm_before = PassThrough()

    def runs(self, i):
        mlp = self.layers()[i].mlp
        return [((mlp.fc1,), mlp.fc2)]

    def empty_runs(self, i, runs):
        layer = self.layers()[i]
        layer.mlp = BiasOnly(layer.mlp.fc2.bias, self.config.hidden_size)
        layer.layernorm_after = PassThrough()


class OptinViTForImageClassification(OptinPruned, ViTForImageClassification):
    layout = ViTLayout


class OptinDeiTForImageClassification(OptinPruned, DeiTForImageClassification):
    layout = ViTLayout
