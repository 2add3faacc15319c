"""OPTIN: one-shot trajectory-based structured pruning of transformers, to a MAC budget."""
from .errors import OptinError
from .io import load_pruned
from .spec import PruneSpec

__version__ = "0.1.0"
__all__ = ["OptinError", "PruneSpec", "load_pruned", "prune"]


def prune(model, data, out, cfg=None):
    """Library entry point of `optin prune`; see optin.prune.PruneConfig."""
    from .prune import PruneConfig, prune as _prune

    return _prune(model, data, out, cfg or PruneConfig())
