"""OPTIN pruned Swin semantic segmenters: optin's model code (carried beside this file as
swin_seg.py), its Swin backbone narrowed to config.optin_narrowed as a Swin classifier's is
(modeling_optin_swin.SwinLayout: the backbone sits at `.swin` in both) before the weights load;
the decoder is never narrowed (the remote twin of optin/adapters/segment.py)."""
from .modeling_optin_swin import SwinLayout
from .optin_pruned import OptinPruned
from .swin_seg import SwinSegForSemanticSegmentation


class OptinSwinSegForSemanticSegmentation(OptinPruned, SwinSegForSemanticSegmentation):
    layout = SwinLayout
