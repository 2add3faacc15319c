"""Model families that transformers does not ship, written as small Hugging Face models so that
loading, saving, narrowing and export treat them like any other. Importing this package registers
them with AutoConfig and AutoModelForImageClassification (the segmenter with
AutoModelForSemanticSegmentation) (here, not in the model files: a pruned folder carries those
files where optin is absent, optin.remote_code). timm_vit imports timm only
when a model is built."""
from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSemanticSegmentation

from .efficientnet_lite import EfficientNetLiteConfig, EfficientNetLiteForImageClassification
from .swin_seg import SwinSegConfig, SwinSegForSemanticSegmentation
from .timm_vit import TimmVitConfig, TimmVitForImageClassification

for _config, _model in ((EfficientNetLiteConfig, EfficientNetLiteForImageClassification),
                        (TimmVitConfig, TimmVitForImageClassification)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForImageClassification.register(_config, _model, exist_ok=True)
AutoConfig.register(SwinSegConfig.model_type, SwinSegConfig, exist_ok=True)
AutoModelForSemanticSegmentation.register(SwinSegConfig, SwinSegForSemanticSegmentation, exist_ok=True)
