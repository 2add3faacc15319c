"""Model families that transformers does not ship, written as small Hugging Face models so that
loading, saving, narrowing and export treat them like any other (importing registers them).
timm_vit (registered by optin.adapters.timm_vit) imports timm only when a model is built."""
from . import efficientnet_lite  # noqa: F401
